"""Time to solve CartPole-v1: SB3's PPO (zoo preset, Gymnasium envs) vs drl's PPO on the
torch-native backend (large-batch preset), in one process, on the same machine.

For each seed:
  1. SB3 PPO with the zoo hyperparameters trains 100k steps; its policy is evaluated.
  2. drl trains with the CartPole-v1@native preset, evaluating on Gymnasium's CartPole-v1
     (20 episodes, deterministic) as it goes, until the mean return reaches 475.
Time to solve is training wall-clock: drl's excludes the time spent in its evaluations, as
SB3's excludes its evaluation after training. The solved drl policy is checked once more on
100 fresh Gymnasium episodes with other seeds. Then: steady-state steps/s of the preset
(1M steps, no evaluation) and raw env steps/s of the native env.

    python benchmarks/native_cartpole.py --seeds 0 1 2
    python benchmarks/native_cartpole.py --device cuda --env-sizes 4096 16384 65536   # on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from vs_sb3 import configs as zoo_configs
from vs_sb3 import run_sb3

import envs
from agents import PPOConfig
from agents.presets import load_preset
from runners.cliargs import set_values
from runners.config import TrainConfig
from runners.evaluate import evaluate
from runners.run_dir import create_run_dir
from runners.trainer import Trainer


def native_configs(seed: int, device: str, **overrides) -> tuple[TrainConfig, PPOConfig]:
    train, agent = TrainConfig(algo="ppo", env_id="CartPole-v1", seed=seed, device=device), PPOConfig()
    name, values = load_preset("ppo", "CartPole-v1", None, "native")
    set_values([train, agent], {**values, **overrides}, f"preset {name}")
    train.progress, train.checkpoint_every = False, 0
    return train, agent


def solve_native(seed: int, device: str, workdir: Path):
    train, agent = native_configs(seed, device)
    trainer = Trainer(train, agent)
    result = trainer.run(create_run_dir(workdir / f"native-{seed}"))
    check = evaluate(trainer.agent, "CartPole-v1", episodes=100, seed=10_000 + seed)
    return result, check


def steady_sps(device: str, workdir: Path, steps: int = 1_000_000) -> float:
    train, agent = native_configs(
        0, device, total_steps=steps, eval_episodes=0, stop_when_solved=False, log_every=steps
    )
    start = time.perf_counter()
    result = Trainer(train, agent).run(create_run_dir(workdir / "steady"))
    return result.global_step / (time.perf_counter() - start)


def env_sps(num_envs: int, device: str, steps: int = 200) -> float:
    env = envs.make("CartPole-v1", num_envs, backend="native", seed=0, device=device)
    env.reset()
    actions = torch.randint(0, 2, (steps, num_envs), device=device)
    for t in range(10):
        env.step(actions[t])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for t in range(steps):
        env.step(actions[t])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return steps * num_envs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--env-sizes", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--no-sb3", action="store_true", help="skip SB3 (e.g. on a GPU machine)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}", flush=True)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            sb3 = None
            if not args.no_sb3:
                sb3 = run_sb3("ppo", *zoo_configs("ppo", "CartPole-v1", seed, None), 20)
                print(
                    f"seed {seed}: SB3 PPO (zoo, 100k steps) {sb3[0]:6.2f} s, eval {sb3[2].mean_return:.1f}", flush=True
                )
            result, check = solve_native(seed, args.device, Path(tmp))
            if result.solved is None:
                print(f"seed {seed}: drl native did not reach 475 in {result.global_step} steps", flush=True)
                rows.append((seed, sb3, None, check))
                continue
            steps, seconds = result.solved
            print(
                f"seed {seed}: drl native solved at {steps} steps in {seconds:.2f} s of training "
                f"({steps / seconds:,.0f} steps/s end to end; {result.seconds:.2f} s with evaluations); "
                f"100 fresh episodes: {check.mean_return:.1f} +- {check.std_return:.1f}"
                + (f"; time ratio drl / SB3 {seconds / sb3[0]:.3f}" if sb3 else ""),
                flush=True,
            )
            rows.append((seed, sb3, result.solved, check))
        steady = steady_sps(args.device, Path(tmp))
    raw = {n: env_sps(n, args.device) for n in args.env_sizes}

    solved = [r for r in rows if r[2] is not None]
    print("\n| seed | SB3 time (s) | SB3 eval | drl time to solve (s) | drl steps | drl steps/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    for seed, sb3, solve, _ in rows:
        s_time, s_eval = (f"{sb3[0]:.2f}", f"{sb3[2].mean_return:.1f}") if sb3 else ("-", "-")
        if solve is None:
            print(f"| {seed} | {s_time} | {s_eval} | not solved | | | |")
            continue
        ratio = f"{solve[1] / sb3[0]:.3f}" if sb3 else "-"
        steps, seconds = solve
        print(f"| {seed} | {s_time} | {s_eval} | {seconds:.2f} | {steps:,} | {steps / seconds:,.0f} | {ratio} |")
    if solved and not args.no_sb3:
        sb3_mean = statistics.fmean(r[1][0] for r in rows)
        drl_mean = statistics.fmean(r[2][1] for r in solved)
        print(
            f"\nmean time to solve: SB3 {sb3_mean:.2f} s, drl {drl_mean:.2f} s; ratio {drl_mean / sb3_mean:.3f} "
            f"({len(solved)}/{len(rows)} drl seeds solved)"
        )
    print(f"steady-state training throughput of the preset (1M steps, no evaluation): {steady:,.0f} steps/s")
    for n, sps in raw.items():
        print(f"raw native CartPole env steps/s at {n} envs: {sps:,.0f}")


if __name__ == "__main__":
    main()
