"""The env backend contract: every backend satisfies `envs.VectorEnvBackend` and returns
`envs.StepInfo`; the backend registry; one-line errors.

The conformance tests run on every backend registered when the tests are collected (plus a
user's backend written here, `toy`): a new backend is done when it registers and passes them
(teach `available` about it if it needs an optional package).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from typing import Any

import gymnasium as gym
import pytest
import torch

import envs
from agents.config import ConfigError
from runners.cliargs import add_arguments, set_values
from runners.config import TrainConfig

from conftest import run_drl

BACKENDS = envs.backend_names()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


class ToyBackend:
    """A user's backend: obs is the step count in the episode, reward 1 a step, Discrete(2)
    actions, truncated after `max_episode_steps`, never terminated. Written against the
    Protocol only (no Gymnasium vector env underneath)."""

    def __init__(self, num_envs: int, device: torch.device, max_episode_steps: int = 4):
        self.num_envs, self.device, self.limit = num_envs, torch.device(device), max_episode_steps
        self.single_observation_space = gym.spaces.Box(0.0, 1e6, (1,))
        self.single_action_space = gym.spaces.Discrete(2)
        self.obs_dtype = torch.float32
        self.t = torch.zeros(num_envs, dtype=torch.int64, device=self.device)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[torch.Tensor, dict]:
        self.t.zero_()
        return self.t.to(torch.float32).unsqueeze(1), {}

    def step(self, actions: torch.Tensor):
        self.t += 1
        truncated = self.t >= self.limit
        final_obs = self.t.to(torch.float32).unsqueeze(1)
        lengths = torch.where(truncated, self.t, 0)
        info = envs.StepInfo(final_obs, lengths.to(torch.float32), lengths, bool(truncated.any()))
        self.t = torch.where(truncated, 0, self.t)
        reward = torch.ones(self.num_envs, device=self.device)
        terminated = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        return self.t.to(torch.float32).unsqueeze(1), reward, terminated, truncated, info

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = state["t"].to(self.device).clone()

    def close(self) -> None:
        pass

    def render(self) -> None:
        return None


def make_toy(env_id, num_envs, seed, device, training, max_episode_steps=4, **kwargs):
    return ToyBackend(num_envs, device, max_episode_steps)


@pytest.fixture
def toy_backend():
    envs.register_backend("toy", make_toy, "a test backend")
    try:
        yield "toy"
    finally:
        envs.unregister_backend("toy")


def available(backend: str) -> bool:
    return backend != "envpool" or importlib.util.find_spec("envpool") is not None


def zero_actions(env: envs.VectorEnvBackend) -> torch.Tensor:
    space = env.single_action_space
    if isinstance(space, gym.spaces.Discrete):
        return torch.zeros(env.num_envs, dtype=torch.int64, device=env.device)
    return torch.zeros((env.num_envs, *space.shape), dtype=torch.float32, device=env.device)


def check_step(env, out, obs_shape) -> envs.StepInfo:
    """The types, shapes, dtypes and devices of one step's results."""
    obs, reward, terminated, truncated, info = out
    n, device = env.num_envs, env.device
    assert isinstance(info, envs.StepInfo)
    for tensor, shape, dtype in (
        (obs, (n, *obs_shape), env.obs_dtype),
        (reward, (n,), torch.float32),
        (terminated, (n,), torch.bool),
        (truncated, (n,), torch.bool),
        (info.final_obs, (n, *obs_shape), env.obs_dtype),
        (info.episode_return, (n,), torch.float32),
        (info.episode_length, (n,), torch.int64),
    ):
        assert isinstance(tensor, torch.Tensor)
        assert tuple(tensor.shape) == shape and tensor.dtype == dtype and tensor.device == device
    assert info.episodes_ended is None or isinstance(info.episodes_ended, bool)
    if info.episodes_ended is not None:
        assert info.episodes_ended == bool(info.episode_length.any())
    return info


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("backend", [*BACKENDS, "toy"])
def test_backend_keeps_the_contract(backend, env_id, device, request):
    """Types, shapes and devices; a time limit truncates (never terminates) with the true final
    observation kept apart from the next episode's first; state_dict round trip (or TypeError)."""
    if not available(backend):
        pytest.skip(f"{backend} is not installed")
    if backend == "toy":
        request.getfixturevalue("toy_backend")
    env = envs.make(env_id, 2, backend, seed=0, device=device, max_episode_steps=5)
    try:
        assert isinstance(env, envs.VectorEnvBackend)
        assert env.num_envs == 2 and env.device == torch.device(device)
        obs_shape = envs.storage_shape(env.single_observation_space)
        obs, _ = env.reset(seed=0)
        assert tuple(obs.shape) == (2, *obs_shape) and obs.dtype == env.obs_dtype and obs.device == env.device
        for t in range(5):
            out = env.step(zero_actions(env))
            info = check_step(env, out, obs_shape)
            next_obs, reward, terminated, truncated, _ = out
            assert not terminated.any()  # 5 steps: no pole falls, no pendulum terminates
            if t < 4:
                assert not truncated.any() and not info.episode_length.any() and info.episodes_ended is not True
                assert torch.equal(info.final_obs, next_obs)
            else:
                assert truncated.all()
                assert info.episode_length.tolist() == [5, 5]
                assert info.episodes_ended in (True, None)
                assert torch.isfinite(info.episode_return).all()
                if env_id == "CartPole-v1":
                    assert info.episode_return.tolist() == [5.0, 5.0]
                assert not torch.equal(info.final_obs[0], next_obs[0])  # the final obs, then a fresh start

        try:
            state = env.state_dict()
        except TypeError:
            return  # an env that cannot be saved says so with TypeError (EnvPool)
        actions = zero_actions(env)
        expected = [env.step(actions)[0] for _ in range(3)]
        env.load_state_dict(state)
        assert all(torch.equal(env.step(actions)[0], want) for want in expected)
    finally:
        env.close()


@pytest.mark.parametrize("backend", [b for b in BACKENDS if available(b)])
def test_termination_is_not_truncation(backend):
    """CartPole pushed one way falls over long before its time limit: terminated, not
    truncated, and final_obs is the fallen state, not the next episode's first."""
    env = envs.make("CartPole-v1", 1, backend, seed=0)
    try:
        env.reset(seed=0)
        for _ in range(100):
            obs, _, terminated, truncated, info = env.step(torch.zeros(1, dtype=torch.int64))
            if terminated.any():
                break
        assert terminated.item() and not truncated.item()
        x, theta = info.final_obs[0, 0].item(), info.final_obs[0, 2].item()
        assert abs(x) > 2.4 or abs(theta) > 0.2094
        assert obs[0, 2].abs().item() <= 0.05  # the new episode's first observation
    finally:
        env.close()


def test_importing_envs_imports_no_optional_backend():
    code = "import sys, envs; print(sorted({'envpool', 'ale_py'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- registry
def test_built_in_backends_are_registered_in_order():
    assert envs.backend_names()[:4] == ("gym", "async", "native", "envpool")
    assert all(envs.get_backend(name).summary for name in envs.backend_names())


def test_unknown_backend_is_an_env_error_naming_the_choices():
    with pytest.raises(envs.EnvError, match=r"unknown backend 'nope'; choose one of: gym, async, native, envpool"):
        envs.make("CartPole-v1", backend="nope")
    with pytest.raises(envs.EnvError, match="unknown backend"):
        envs.get_backend("nope")


def test_a_registered_backend_is_made_and_accepted_by_the_config(toy_backend):
    env = envs.make("Anything-v0", 3, backend="toy", seed=1)
    assert isinstance(env, ToyBackend) and isinstance(env, envs.VectorEnvBackend)
    assert "toy" in envs.backend_names()
    TrainConfig(backend="toy").validate()
    with pytest.raises(ValueError, match="already registered"):
        envs.register_backend("toy", make_toy, "again")
    envs.register_backend("toy", make_toy, "replaced", replace=True)
    assert envs.get_backend("toy").summary == "replaced"
    with pytest.raises(envs.EnvError, match="videos are recorded with the gym or async backend, not toy"):
        envs.make("Anything-v0", 1, backend="toy", video_dir="videos")


def test_an_unregistered_backend_is_refused_by_the_config():
    with pytest.raises(ConfigError) as error:
        TrainConfig(backend="toy").validate()
    names = ", ".join(envs.backend_names())  # the built-ins, and any other test file's backend
    assert names.startswith("gym, async, native, envpool")
    assert str(error.value) == f"--backend must be one of {names}, got 'toy'"


def test_backend_choices_come_from_the_registry_in_help_and_presets(toy_backend):
    parser = argparse.ArgumentParser()
    add_arguments(parser, TrainConfig(), "run options")
    names = envs.backend_names()  # the built-ins, toy, and any other test file's backend
    assert names[:4] == ("gym", "async", "native", "envpool") and "toy" in names
    assert f"--backend {{{','.join(names)}}}" in " ".join(parser.format_help().split())
    cfg = TrainConfig()
    set_values(cfg, {"backend": "toy"}, "preset p")
    assert cfg.backend == "toy"
    with pytest.raises(ConfigError, match=f"backend in preset p must be one of {', '.join(names)}"):
        set_values(cfg, {"backend": "nope"}, "preset p")


def test_cli_rejects_an_unknown_backend_in_one_line(tmp_path):
    result = run_drl("train", "ppo", "CartPole-v1", "--backend", "nope", cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "--backend" in lines[0] and "gym, async, native, envpool" in lines[0] and "'nope'" in lines[0]
    assert not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------- first_line
@pytest.mark.parametrize(
    "exc, expected",
    [
        (ValueError(""), "ValueError"),
        (RuntimeError("  \n\n "), "RuntimeError"),
        (OSError("\n  disk full  \nmore detail"), "disk full"),
        (KeyError("x"), "'x'"),
    ],
)
def test_first_line(exc, expected):
    assert envs.first_line(exc) == expected
