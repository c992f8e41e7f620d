"""The conformance suite: every registered algorithm on every env backend that runs here.

For each (algorithm, backend) pair, a short run through the real trainer must
- give the same `metrics.jsonl` (wall-clock fields aside) twice with the same seed,
- stopped half-way and resumed from its checkpoint, write what the uninterrupted run writes,
- give an agent whose `state_dict` loads into a fresh agent that then acts the same,
- leave a run directory that `drl eval` evaluates.

The pairs come from the registries (`agents.ALGORITHMS`, `envs.backend_names()`) when the
tests are collected: a new algorithm or backend is covered by registering it. This file
registers one of each of its own (`vpg`, a vanilla policy gradient written against
`agents.interface.OnPolicyAgent`, and `python-loop`, a backend written against
`envs.VectorEnvBackend`), with no edit to `runners/`: the proof that the contracts are enough.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import pickle
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from agents import ALGORITHMS, AlgorithmSpec, Metrics, Progress, Rollout, register_algorithm
from agents.on_policy import OnPolicyBase, OnPolicyConfig
from agents.optim import adam, set_learning_rate
from agents.schedules import scheduled
from networks import NetworkConfig
from runners.checkpoint import load_checkpoint
from runners.cli import main as drl
from runners.config import TrainConfig
from runners.run_dir import create_run_dir
from runners.trainer import Trainer

from conftest import read_metrics


# ------------------------------------------------------------- a user's algorithm
class VPG(OnPolicyBase):
    """Vanilla policy gradient with a learned baseline: one gradient step per rollout on
    -mean(A log pi) + vf_coef mean((V - R)^2), A and R from the shared GAE code."""

    def make_optimizer(self) -> torch.optim.Optimizer:
        return adam(self.net.parameters(), self.config.learning_rate, self.device)

    def update(self, batch: Rollout, progress: Progress) -> Metrics:
        cfg = self.config
        set_learning_rate(self.optimizer, scheduled(cfg.learning_rate, cfg.lr_schedule, progress.fraction))
        advantages, returns = self.advantages(batch)
        log_probs, _, values = self.net.evaluate(self.preprocess(batch.obs).flatten(0, 1), batch.actions.flatten(0, 1))
        loss = -(advantages.flatten() * log_probs).mean() + cfg.vf_coef * (values - returns.flatten()).square().mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.finish_update(batch)
        return {"losses/loss": loss.detach()}


# -------------------------------------------------------------- a user's backend
class PythonLoopBackend:
    """Gymnasium envs stepped one by one in a Python loop, with same-step autoreset: a
    vectoriser of a user's own, written against the Protocol only."""

    def __init__(self, env_id: str, num_envs: int, seed: int | None, device: torch.device, **kwargs: Any):
        self.envs = [gym.make(env_id, **kwargs) for _ in range(num_envs)]
        self.num_envs, self.device, self.seed = num_envs, torch.device(device), seed
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        self.obs_dtype = envs.torch_dtype(self.single_observation_space)
        self.returns = np.zeros(num_envs)
        self.lengths = np.zeros(num_envs, dtype=np.int64)

    def _tensor(self, values: Any, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(np.asarray(values), device=self.device).to(dtype)  # a copy: `values` changes later

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[torch.Tensor, dict]:
        seed = self.seed if seed is None else seed
        self.seed = None
        obs = [env.reset(seed=None if seed is None else seed + i)[0] for i, env in enumerate(self.envs)]
        self.returns[:], self.lengths[:] = 0.0, 0
        return self._tensor(obs, self.obs_dtype), {}

    def step(self, actions: torch.Tensor):
        actions = actions.cpu().numpy()
        out = [env.step(a) for env, a in zip(self.envs, actions, strict=True)]
        obs, reward, terminated, truncated = (np.array([o[k] for o in out]) for k in range(4))
        self.returns += reward
        self.lengths += 1
        done = terminated | truncated
        final_obs = self._tensor(obs, self.obs_dtype)
        episode_return = self._tensor(np.where(done, self.returns, 0.0), torch.float32)
        episode_length = self._tensor(np.where(done, self.lengths, 0), torch.int64)
        for i in np.flatnonzero(done):
            obs[i] = self.envs[i].reset()[0]
            self.returns[i], self.lengths[i] = 0.0, 0
        info = envs.StepInfo(final_obs, episode_return, episode_length, bool(done.any()))
        as_tensor = self._tensor
        return (
            as_tensor(obs, self.obs_dtype),
            as_tensor(reward, torch.float32),
            as_tensor(terminated, torch.bool),
            as_tensor(truncated, torch.bool),
            info,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"envs": pickle.dumps(self.envs), "returns": self.returns.tolist(), "lengths": self.lengths.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.envs = pickle.loads(state["envs"])
        self.returns[:], self.lengths[:] = state["returns"], state["lengths"]

    def close(self) -> None:
        for env in self.envs:
            env.close()

    def render(self) -> None:
        return None


def make_python_loop(env_id, num_envs, seed, device, training, **kwargs):
    return PythonLoopBackend(env_id, num_envs, seed, device, **kwargs)


if "vpg" not in ALGORITHMS:
    register_algorithm(
        AlgorithmSpec(
            "vpg",
            "Vanilla policy gradient (a test algorithm)",
            OnPolicyConfig,
            VPG,
            "on_policy",
            (gym.spaces.Discrete, gym.spaces.Box),
        )
    )
if "python-loop" not in envs.backend_names():
    envs.register_backend("python-loop", make_python_loop, "Gymnasium envs in a Python loop (a test backend)")


# ------------------------------------------------------------------ the suite
TINY = dict(hidden_sizes=(16,), activation="tanh")


def env_for(spec: AlgorithmSpec) -> str:
    """A classic-control env the algorithm can act in."""
    return "CartPole-v1" if issubclass(gym.spaces.Discrete, spec.action_spaces) else "Pendulum-v1"


def runs_here(backend: str, env_id: str) -> str | None:
    """Why (backend, env) cannot run here, or None."""
    if backend == "native":
        from envs.native import NATIVE_ENVS

        return None if env_id in NATIVE_ENVS else f"no native {env_id}"
    if backend == "envpool":
        if importlib.util.find_spec("envpool") is None:
            return "envpool is not installed"
        import envpool

        return None if env_id in envpool.list_all_envs() else f"EnvPool has no {env_id}"
    return None


def configs(algo: str, backend: str, total_steps: int = 128) -> tuple[TrainConfig, Any]:
    spec = ALGORITHMS[algo]
    env_id = env_for(spec)
    train = TrainConfig(
        algo=algo,
        env_id=env_id,
        backend=backend,
        total_steps=total_steps,
        num_envs=2,
        seed=5,
        device="cpu",
        log_every=32,
        eval_every=64,
        eval_episodes=2,
        checkpoint_every=64,
        progress=False,
        save_buffer=True,
    )
    cfg = spec.config_cls()
    cfg.network = NetworkConfig(**{**cfg.network.__dict__, **TINY})
    if spec.kind == "on_policy":
        cfg.n_steps = 16
        if hasattr(cfg, "batch_size"):
            cfg.batch_size, cfg.n_epochs = 16, 2
    else:
        cfg.learning_starts, cfg.batch_size, cfg.train_every, cfg.buffer_size = 32, 16, 8, 1000
        if hasattr(cfg, "target_update_interval") and algo == "dqn":
            cfg.target_update_interval = 32
    return train, cfg


def pairs() -> list:
    out = []
    for algo, spec in sorted(ALGORITHMS.items()):
        for backend in envs.backend_names():
            if backend == "toy":
                continue  # (test_env_contract's backend, registered only inside its tests)
            reason = runs_here(backend, env_for(spec))
            marks = [pytest.mark.skip(reason=reason)] if reason else []
            out.append(pytest.param(algo, backend, id=f"{algo}-{backend}", marks=marks))
    return out


class Stop(Exception):
    pass


@pytest.mark.parametrize("algo, backend", pairs())
def test_determinism_and_resume(tmp_path, algo, backend):
    train, cfg = configs(algo, backend)
    Trainer(train, cfg).run(create_run_dir(tmp_path / "a"))
    Trainer(*configs(algo, backend)).run(create_run_dir(tmp_path / "b"))
    whole = read_metrics(tmp_path / "a")
    assert len(whole) > 3 and whole == read_metrics(tmp_path / "b"), "the same seed gave different metrics"
    assert any(key.startswith("losses/") for row in whole for key in row), "no update was logged"

    if backend == "envpool":
        pytest.skip("EnvPool's envs cannot be saved, so a resumed run restarts its episodes")
    trainer = Trainer(*configs(algo, backend))

    def stop() -> bool:
        if trainer.global_step >= 96:  # past the checkpoint at 64
            raise Stop
        return False

    run_dir = create_run_dir(tmp_path / "resumed")
    with pytest.raises(Stop):
        trainer.run(run_dir, should_stop=stop)
    payload = load_checkpoint(run_dir)
    assert payload["global_step"] == 64
    Trainer(*configs(algo, backend), resume=payload).run(run_dir)
    assert read_metrics(run_dir) == whole, "the resumed run wrote other metrics than the uninterrupted one"


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_state_round_trip_and_drl_eval(tmp_path, algo):
    train, cfg = configs(algo, "gym", total_steps=64)
    trainer = Trainer(train, cfg)
    run_dir = create_run_dir(tmp_path / "r")
    result = trainer.run(run_dir)
    agent = trainer.agent

    fresh = Trainer(*configs(algo, "gym", total_steps=64))  # other weights: another RNG state
    fresh.env.close()
    clone = fresh.agent
    clone.load_state_dict(agent.state_dict())
    obs = torch.as_tensor(np.stack([trainer.env.single_observation_space.sample() for _ in range(8)]))
    for deterministic in (True, False):
        same = [a.predict(obs.float(), deterministic, torch.Generator().manual_seed(0)) for a in (agent, clone)]
        assert torch.equal(*same)

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert drl(["eval", str(run_dir), "--episodes", "2", "--json"]) == 0
    report = json.loads(out.getvalue())
    assert report["episodes"] == 2 and report["algo"] == algo
    assert report["mean_return"] == pytest.approx(result.final_eval.mean_return)  # the run's own last evaluation
