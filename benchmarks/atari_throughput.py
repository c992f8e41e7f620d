"""Atari PPO throughput: env steps per second of drl's runner on the gym (ale-py) and
EnvPool backends, at 8 and 16 envs, measured in the same run.

For each backend and env count it builds the Atari PPO preset's agent (Nature CNN,
n_steps 128) on ALE/Pong-v5 and reports two rates over a few rollouts, after one warm-up
rollout:
  env      steps/s of the env alone, stepped with random actions (no policy);
  collect  steps/s of rollout collection alone (env stepping, policy inference, storage);
  train    steps/s of whole PPO iterations (collection and the update: 4 epochs of 256-sample
           minibatches), i.e. training speed.

Each is measured for the variants of the CNN's arithmetic (`VARIANTS`): "before" is the code
before issue 19 (float32, NCHW images), "float32" lays images and conv weights out
channels-last (the float32 default now), "bfloat16" is `--cnn-precision bfloat16` (autocast);
the table gives each one's training rate as a multiple of "before"'s, measured in the same run.

    python benchmarks/atari_throughput.py                  # 8 and 16 envs, both backends
    python benchmarks/atari_throughput.py --envs 8 --rollouts 3 --threads 2

Needs the `atari` and `envpool` extras.
"""

from __future__ import annotations

import argparse
import time

import torch

import envs
from agents import get_algorithm
from agents.presets import load_preset
from networks import cnn
from runners.cliargs import set_values
from runners.config import TrainConfig
from runners.rollout import OnPolicyLoop
from runners.trainer import build_agent


def measure(
    env_id: str, backend: str, num_envs: int, rollouts: int, precision: str, compile: bool = False
) -> tuple[float, float, float]:
    train = TrainConfig(algo="ppo", env_id=env_id, seed=0, device="cpu", backend=backend, compile=compile)
    agent_cfg = get_algorithm("ppo").config_cls()
    name, values = load_preset("ppo", env_id, None, backend)
    set_values([train, agent_cfg], {**values, "cnn_precision": precision}, f"preset {name}")
    train.num_envs = num_envs
    env = envs.make(env_id, num_envs, backend, seed=0)
    try:
        env.reset(seed=0)
        actions = torch.randint(0, int(env.single_action_space.n), (64, num_envs))
        t0 = time.perf_counter()
        for a in actions.repeat(8, 1):
            env.step(a)
        raw = 512 * num_envs / (time.perf_counter() - t0)
        agent = build_agent(train, agent_cfg, env, torch.device("cpu"))
        loop = OnPolicyLoop(env, agent, total_steps=10**7)
        loop.reset(seed=0)
        loop.iterate(0)  # warm-up: allocations, first resets
        collector = loop.collector
        t0 = time.perf_counter()
        for _ in range(rollouts):
            collector.collect()
        collect = rollouts * loop.steps_per_iteration / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(rollouts):
            loop.iterate(i * loop.steps_per_iteration)
        trained = rollouts * loop.steps_per_iteration / (time.perf_counter() - t0)
    finally:
        env.close()
    return raw, collect, trained


VARIANTS = {
    "before": ("float32", False),  # the code before issue 19: float32, images as they come (NCHW)
    "float32": ("float32", True),  # float32 with channels-last images and conv weights
    "bfloat16": ("bfloat16", False),  # --cnn-precision bfloat16 (auto on this CPU): the CNN under autocast
    "bf16+compile": ("bfloat16", False),  # and --compile: the gradient step through torch.compile
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="ALE/Pong-v5")
    parser.add_argument("--envs", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--backends", nargs="+", default=["gym", "envpool"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--rollouts", type=int, default=3, help="timed rollouts per measurement")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    results: dict[tuple[str, int, str], tuple[float, float, float]] = {}
    for n in args.envs:
        for backend in args.backends:
            for variant in args.variants:
                precision, channels_last = VARIANTS[variant]
                saved = dict(cnn.CHANNELS_LAST)
                cnn.CHANNELS_LAST[precision] = channels_last
                try:
                    compiled = variant.endswith("compile")
                    results[backend, n, variant] = measure(args.env, backend, n, args.rollouts, precision, compiled)
                finally:
                    cnn.CHANNELS_LAST.update(saved)
                rates = ", ".join(f"{r:.0f}" for r in results[backend, n, variant])
                print(f"{backend:>8} {n:>3} envs {variant:>12}: {rates}", flush=True)

    print(f"\n{args.env}, PPO Atari preset, torch threads {torch.get_num_threads()}")
    print(
        f"{'envs':>5} {'backend':>8} {'variant':>9} {'env steps/s':>12} {'collect steps/s':>16} {'train steps/s':>14}"
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
