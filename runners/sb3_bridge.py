"""Stable-Baselines3 with drl's hyperparameters, for `drl compare` and benchmarks/vs_sb3*.py.

Three pieces, written once here:
- the mapping: drl's preset for ALGO on ENV_ID (`preset_configs`) as SB3's arguments
  (`sb3_arguments`: a JSON-able spec holding the SB3 class's keyword arguments, its policy's
  network, schedules and action noise); a value SB3 cannot take the same way (observation
  normalisation, a CNN, a recurrent core, prioritised replay, ...) is a one-line ConfigError;
- the training script: `python -m runners.sb3_bridge SPEC_JSON [--save DIR]` builds the model
  (`sb3_model`), trains it for the spec's steps, optionally saves it (model.zip and the training
  episodes, episodes.json) or evaluates it, and prints one JSON line;
- `SB3Policy`: drl's evaluation interface over an SB3 model, so that runners.evaluate.evaluate
  plays both libraries' policies by the same code on the same episodes.

SB3 is imported only where a model is built or loaded (the `bench` extra: pip install 'drl[bench]').
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from agents import ConfigError, get_algorithm
from agents.presets import load_preset
from runners.cliargs import set_values
from runners.config import TrainConfig

ON_POLICY = ("ppo", "a2c")
OFF_POLICY = ("dqn", "sac", "td3", "ddpg")
SB3_ALGORITHMS = ON_POLICY + OFF_POLICY
"""drl's algorithms that SB3 also has, under the same name."""
ACTIVATIONS = {"tanh": "Tanh", "relu": "ReLU", "elu": "ELU", "gelu": "GELU"}
"""drl's activation names as torch.nn classes (SB3's policy_kwargs activation_fn)."""


def check_supported(algo: str) -> None:
    """A ConfigError unless `algo` is one of SB3_ALGORITHMS."""
    if algo not in SB3_ALGORITHMS:
        raise ConfigError(f"Stable-Baselines3 has no {algo}; drl compare supports: {', '.join(SB3_ALGORITHMS)}")


def preset_configs(algo: str, env_id: str, seed: int, steps: int | None = None, device: str = "cpu"):
    """(TrainConfig, agent config, preset name) of `drl train ALGO ENV_ID --seed SEED` with the
    preset that command applies, `steps` (when given) as the budget, on `device`."""
    spec = get_algorithm(algo)
    train, agent = TrainConfig(algo=spec.name, env_id=env_id, seed=seed, device=device), spec.config_cls()
    name, values = load_preset(spec.name, env_id, None)
    set_values([train, agent], values, f"preset {name}")
    if steps:
        train.total_steps = steps
    return train, agent, name


def sb3_arguments(algo: str, train: TrainConfig, agent: Any, preset: str | None = None) -> dict[str, Any]:
    """drl's configs as the spec of the SB3 script (plain JSON values; `sb3_model` builds from it)."""
    check_supported(algo)
    where = f"{algo} on {train.env_id}" + (f" (preset {preset})" if preset else "")
    net = agent.network
    _require(net.network in ("auto", "mlp"), where, f"--network {net.network} (drl compare maps MLP policies)")
    _require(net.recurrent == "none", where, f"--recurrent {net.recurrent}")
    _require(not net.share_encoder, where, "--share-encoder (SB3's MLP policies keep actor and critic apart)")
    _require(net.activation in ACTIVATIONS, where, f"--activation {net.activation}")
    policy: dict[str, Any] = {"activation": net.activation}
    spec: dict[str, Any] = {
        "algo": algo,
        "env_id": train.env_id,
        "num_envs": train.num_envs,
        "seed": train.seed,
        "total_steps": train.total_steps,
        "device": train.device if train.device != "auto" else "cpu",
        "lr_schedule": getattr(agent, "lr_schedule", "constant"),
        "clip_schedule": getattr(agent, "clip_schedule", "constant"),
        "action_noise": 0.0,
        "policy_kwargs": policy,
    }
    if algo in ON_POLICY:
        _require(not agent.normalize_obs and not agent.normalize_reward, where, "--normalize-obs/--normalize-reward")
        policy.update(
            net_arch={"pi": list(net.hidden_sizes), "vf": list(net.hidden_sizes)},
            ortho_init=net.ortho_init,
            log_std_init=net.log_std_init,
        )
        spec["kwargs"] = on_policy_kwargs(algo, agent, train.num_envs)
        if algo == "ppo":
            policy["optimizer_kwargs"] = {"eps": agent.adam_eps}
        elif agent.optimizer == "adam":
            policy["optimizer_kwargs"] = {"eps": agent.optimizer_eps}
        else:
            _require(agent.rmsprop_alpha == 0.99, where, f"--rmsprop-alpha {agent.rmsprop_alpha} (SB3's is 0.99)")
    else:
        _require(not net.ortho_init, where, "--ortho-init (SB3's off-policy networks keep torch's default init)")
        _require(not agent.prioritized, where, "--prioritized")
        _require(train.num_envs == 1, where, f"--num-envs {train.num_envs} (SB3's train_freq is per env)")
        gradient_steps = round(agent.utd_ratio * agent.train_every)
        _require(gradient_steps >= 1, where, f"--utd-ratio {agent.utd_ratio} x --train-every {agent.train_every} < 1")
        policy["net_arch"] = list(net.hidden_sizes)
        spec["kwargs"] = off_policy_kwargs(algo, agent, gradient_steps, where)
        if algo in ("sac", "td3", "ddpg"):
            policy["n_critics"] = agent.n_critics
        if algo in ("td3", "ddpg"):
            spec["action_noise"] = agent.exploration_noise  # SB3 adds it to the action in [-1, 1]^A, as drl does
    return spec


def on_policy_kwargs(algo: str, agent: Any, num_envs: int) -> dict[str, Any]:
    """PPO's or A2C's config as SB3 keyword arguments (plain numbers: `sb3_model` adds the schedules)."""
    kwargs = dict(
        n_steps=agent.steps_per_env(num_envs),
        gamma=agent.gamma,
        gae_lambda=agent.gae_lambda,
        ent_coef=agent.ent_coef,
        vf_coef=agent.vf_coef,
        max_grad_norm=agent.max_grad_norm,
        normalize_advantage=agent.normalize_advantage,
        learning_rate=agent.learning_rate,
    )
    if algo == "ppo":
        kwargs.update(
            batch_size=agent.batch_size,
            n_epochs=agent.n_epochs,
            clip_range=agent.clip_range,
            clip_range_vf=agent.clip_range_vf,
            target_kl=agent.target_kl,
        )
    else:
        kwargs.update(use_rms_prop=agent.optimizer == "rmsprop", rms_prop_eps=agent.optimizer_eps)
    return kwargs


def off_policy_kwargs(algo: str, agent: Any, gradient_steps: int, where: str) -> dict[str, Any]:
    """An off-policy config as SB3 keyword arguments (those the algorithms share, then each one's own)."""
    kwargs = dict(
        learning_rate=agent.learning_rate,
        buffer_size=agent.buffer_size,
        learning_starts=agent.learning_starts,
        batch_size=agent.batch_size,
        gamma=agent.gamma,
        tau=agent.tau,
        train_freq=agent.train_every,
        gradient_steps=gradient_steps,
        n_steps=agent.n_step,
    )
    if algo == "sac":
        init = agent.ent_coef_init
        kwargs.update(
            ent_coef=agent.ent_coef if agent.ent_coef is not None else ("auto" if init == 1.0 else f"auto_{init}"),
            target_entropy="auto" if agent.target_entropy is None else agent.target_entropy,
            target_update_interval=agent.target_update_interval,
        )
    elif algo == "td3":
        kwargs.update(
            policy_delay=agent.policy_delay,
            target_policy_noise=agent.target_policy_noise,
            target_noise_clip=agent.target_noise_clip,
        )
    elif algo == "ddpg":  # SB3's DDPG: TD3 with no policy delay and no target policy smoothing
        _require(agent.policy_delay == 1, where, f"--policy-delay {agent.policy_delay} (SB3's DDPG has 1)")
        _require(agent.target_policy_noise == 0, where, "--target-policy-noise (SB3's DDPG has none)")
    else:  # dqn
        _require(not (agent.double_q or agent.dueling), where, "--double-q or --dueling (SB3's DQN has neither)")
        kwargs.update(
            target_update_interval=agent.target_update_interval,
            exploration_fraction=agent.exploration_fraction,
            exploration_initial_eps=agent.exploration_initial_eps,
            exploration_final_eps=agent.exploration_final_eps,
            max_grad_norm=agent.max_grad_norm,
        )
    return kwargs


def _require(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise ConfigError(f"{where}: {what} has no Stable-Baselines3 counterpart here")


def sb3_class(algo: str) -> type:
    """SB3's class of the algorithm `algo`."""
    import stable_baselines3

    return getattr(stable_baselines3, algo.upper())


def sb3_model(spec: dict[str, Any]):
    """The SB3 model `spec` (from `sb3_arguments`) describes, on its own env (make_vec_env: one
    Monitor per env, env i seeded seed + i)."""
    import gymnasium as gym
    import numpy as np
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.noise import NormalActionNoise

    import envs

    env_spec = envs.resolve_env_id(spec["env_id"])  # also drl's own envs and `module:Env` ids
    env = make_vec_env(lambda: gym.make(env_spec), n_envs=spec["num_envs"], seed=spec["seed"])
    kwargs = dict(spec["kwargs"])
    kwargs["learning_rate"] = _schedule(kwargs["learning_rate"], spec["lr_schedule"])
    if spec["algo"] == "ppo":
        kwargs["clip_range"] = _schedule(kwargs["clip_range"], spec["clip_schedule"])
    policy = dict(spec["policy_kwargs"])
    policy["activation_fn"] = getattr(torch.nn, ACTIVATIONS[policy.pop("activation")])
    if spec["action_noise"] > 0:
        dim = env.action_space.shape[0]
        kwargs["action_noise"] = NormalActionNoise(np.zeros(dim), np.full(dim, spec["action_noise"]))
    cls = sb3_class(spec["algo"])
    return cls("MlpPolicy", env, policy_kwargs=policy, seed=spec["seed"], device=spec["device"], **kwargs)


def _schedule(value: float, schedule: str):
    """SB3's form of drl's schedule: a function of the remaining progress (1 -> 0) when linear."""
    return (lambda remaining: remaining * value) if schedule == "linear" else value


def training_episodes(model) -> list[tuple[int, float]]:
    """(env steps, return) of every training episode, in order of the steps at which they ended
    (env i's k-th episode ends at its own step count x num_envs, as the envs step together)."""
    env = model.get_env()
    episodes = []
    for returns, lengths in zip(
        env.env_method("get_episode_rewards"), env.env_method("get_episode_lengths"), strict=True
    ):
        steps = 0
        for ret, length in zip(returns, lengths, strict=True):
            steps += length
            episodes.append((steps * env.num_envs, float(ret)))
    return sorted(episodes)


class SB3Policy:
    """drl's evaluation interface over an SB3 model (what runners.evaluate.evaluate calls)."""

    def __init__(self, model):
        self.model = model
        self.device = torch.device("cpu")  # SB3's predict takes and gives NumPy arrays

    def predict(self, obs, deterministic=True, generator=None):
        actions, _ = self.model.predict(obs.cpu().numpy(), deterministic=deterministic)
        return torch.as_tensor(actions)


def load_policy(algo: str, path: Path) -> SB3Policy:
    """The SB3 model saved at `path` (model.zip), on the CPU, as an SB3Policy."""
    return SB3Policy(sb3_class(algo).load(path, device="cpu"))


def main(argv: list[str] | None = None) -> int:
    """The SB3 training script: train the spec's model, then save and/or evaluate it; print one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m runners.sb3_bridge", description=main.__doc__)
    parser.add_argument("spec", help="the JSON of sb3_arguments(...)")
    parser.add_argument("--save", type=Path, help="directory for model.zip and episodes.json")
    parser.add_argument("--eval-episodes", type=int, default=0, help="then evaluate this many episodes")
    parser.add_argument("--eval-seed", type=int, default=0, help="seed of the evaluation envs")
    args = parser.parse_args(argv)
    spec = json.loads(args.spec)
    model = sb3_model(spec)
    model.learn(spec["total_steps"])
    report: dict[str, Any] = {"steps": model.num_timesteps}
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        model.save(args.save / "model.zip")
        (args.save / "episodes.json").write_text(json.dumps(training_episodes(model)))
    if args.eval_episodes:
        from runners.evaluate import evaluate

        result = evaluate(SB3Policy(model), spec["env_id"], args.eval_episodes, args.eval_seed)
        report.update(mean_return=result.mean_return, std_return=result.std_return)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
