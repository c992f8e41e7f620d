"""Atari PPO throughput: env steps per second of drl's runner on the gym (ale-py) and
EnvPool backends, at 8 and 16 envs, measured in the same run.

For each backend and env count it builds the Atari PPO preset's agent (Nature CNN,
n_steps 128) on ALE/Pong-v5 once for every variant and reports three rates:
  env      steps/s of the env alone, stepped with random actions (no policy; today's env);
  collect  steps/s of rollout collection alone (env stepping, policy inference, storage);
  train    steps/s of whole PPO iterations (collection and the update: 4 epochs of 256-sample
           minibatches), i.e. training speed.
The variants take turns, one rollout (then one iteration) each, after a warm-up iteration each,
and the rates are medians over --rollouts turns: on a shared machine whose speed drifts by tens
of percent within minutes, each variant meets the same drift.

The variants (`VARIANTS`): "before" is the code before issue 19 (float32, NCHW images, V
evaluated at the final observation of every step of a rollout, not only of truncated ones, and
on the gym backend a raw Atari env returning RGB screens that gymnasium's AtariPreprocessing,
stepping it frame by frame, drops),
"float32" lays images and conv weights out channels-last (the float32 default now), "bfloat16"
is `--cnn-precision bfloat16` (autocast; what auto picks on a CPU with AVX512-BF16 or AMX), and
"bf16+compile" adds `--compile`. The table gives each one's training rate as a multiple of
"before"'s, measured in the same run.

    python benchmarks/atari_throughput.py                  # 8 and 16 envs, both backends
    python benchmarks/atari_throughput.py --envs 8 --rollouts 7 --threads 2 --variants before float32 bfloat16

Needs the `atari` and `envpool` extras.
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import torch

import envs
from agents import get_algorithm
from agents.presets import load_preset
from envs import atari
from networks import cnn
from runners.cliargs import set_values
from runners.config import TrainConfig
from runners.rollout import OnPolicyLoop
from runners.trainer import build_agent

VARIANTS = {  # precision, channels-last in that precision, V at truncated steps only, --compile, new env
    "before": ("float32", False, False, False, False),  # the code before issue 19
    "float32": ("float32", True, True, False, True),  # float32 with channels-last images and conv weights
    "bfloat16": ("bfloat16", False, True, False, True),  # --cnn-precision bfloat16 (auto on this CPU)
    "bf16+compile": ("bfloat16", False, True, True, True),  # and --compile: the gradient step compiled
}


def env_rate(env_id: str, backend: str, num_envs: int) -> float:
    """Env steps/s with random actions, no policy."""
    env = envs.make(env_id, num_envs, backend, seed=0)
    try:
        env.reset(seed=0)
        actions = torch.randint(0, int(env.single_action_space.n), (512, num_envs))
        t0 = time.perf_counter()
        for a in actions:
            env.step(a)
        return 512 * num_envs / (time.perf_counter() - t0)
    finally:
        env.close()


def build(env_id: str, backend: str, num_envs: int, variant: str) -> OnPolicyLoop:
    """The preset's PPO loop on its own env, with the variant's arithmetic, warmed up by one iteration."""
    precision, channels_last, select_truncated, compile, new_env = VARIANTS[variant]
    train = TrainConfig(algo="ppo", env_id=env_id, seed=0, device="cpu", backend=backend, compile=compile)
    agent_cfg = get_algorithm("ppo").config_cls()
    name, values = load_preset("ppo", env_id, None, backend)
    set_values([train, agent_cfg], {**values, "cnn_precision": precision}, f"preset {name}")
    train.num_envs = num_envs
    # before issue 19 the gym backend's raw Atari env returned RGB screens, and gymnasium's
    # AtariPreprocessing stepped it frame by frame (see envs/atari.py)
    old_env = backend == "gym" and not new_env
    ours = atari.Preprocessing  # read by make_atari
    try:
        if old_env:
            atari.Preprocessing = gym.wrappers.AtariPreprocessing
        env = envs.make(env_id, num_envs, backend, seed=0, **({"obs_type": "rgb"} if old_env else {}))
    finally:
        atari.Preprocessing = ours
    saved = dict(cnn.CHANNELS_LAST)
    cnn.CHANNELS_LAST[precision] = channels_last  # read when the encoder is built
    try:
        agent = build_agent(train, agent_cfg, env, torch.device("cpu"))
    finally:
        cnn.CHANNELS_LAST.update(saved)
    loop = OnPolicyLoop(env, agent, total_steps=10**7)
    loop.collector.select_truncated = select_truncated
    loop.reset(seed=0)
    loop.iterate(0)  # warm-up: allocations, first resets, compilation
    return loop


def measure(env_id: str, backend: str, num_envs: int, variants: list[str], rounds: int) -> dict[str, tuple]:
    """(env, collect, train) steps/s of each variant, its rollouts and iterations taking turns."""
    raw = env_rate(env_id, backend, num_envs)
    loops = {variant: build(env_id, backend, num_envs, variant) for variant in variants}
    collect: dict[str, list[float]] = {v: [] for v in variants}
    train: dict[str, list[float]] = {v: [] for v in variants}
    try:
        for r in range(rounds):
            for variant, loop in loops.items():
                t0 = time.perf_counter()
                loop.collector.collect()
                collect[variant].append(loop.steps_per_iteration / (time.perf_counter() - t0))
            for variant, loop in loops.items():
                t0 = time.perf_counter()
                loop.iterate(r * loop.steps_per_iteration)
                train[variant].append(loop.steps_per_iteration / (time.perf_counter() - t0))
    finally:
        for loop in loops.values():
            loop.collector.env.close()
    return {v: (raw, statistics.median(collect[v]), statistics.median(train[v])) for v in variants}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="ALE/Pong-v5")
    parser.add_argument("--envs", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--backends", nargs="+", default=["gym", "envpool"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--rollouts", type=int, default=5, help="turns of each variant (median)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    results: dict[tuple[str, int, str], tuple[float, float, float]] = {}
    for n in args.envs:
        for backend in args.backends:
            for variant, rates in measure(args.env, backend, n, args.variants, args.rollouts).items():
                results[backend, n, variant] = rates
                print(f"{backend:>8} {n:>3} envs {variant:>12}: " + ", ".join(f"{r:.0f}" for r in rates), flush=True)

    print(f"\n{args.env}, PPO Atari preset, torch threads {torch.get_num_threads()}, medians of {args.rollouts} turns")
    print(
        f"{'envs':>5} {'backend':>8} {'variant':>12} {'env steps/s':>12} {'collect steps/s':>16} {'train steps/s':>14}"
    )
    for n in args.envs:
        for backend in args.backends:
            for variant in args.variants:
                raw, collect, trained = results[backend, n, variant]
                ratio = ""
                if variant != "before" and (backend, n, "before") in results:
                    ratio = f"   {trained / results[backend, n, 'before'][2]:.2f}x before's train steps/s"
                print(f"{n:>5} {backend:>8} {variant:>12} {raw:>12.0f} {collect:>16.0f} {trained:>14.0f}{ratio}")


if __name__ == "__main__":
    main()
