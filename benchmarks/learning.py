"""Learning benchmark: train the shipped presets to a score and compare it with the zoo's.

Each named set is (algorithm, env, env steps, seeds, anchor). For every seed it runs the real
`drl train ALGO ENV --seed S --total-steps N` in a fresh process (the preset applies; the run's
own evaluations are switched off), then judges the final policy on 20 held-out episodes
(`drl eval RUN --episodes 20 --seed 1234 --json`, the suite's evaluation protocol: true game
scores on Atari). It prints, and writes as Markdown with `--table FILE`, one row per set: the
mean over seeds with a 95% interval (Student's t), the published anchor and a random policy's
score beside it, the threshold of issue 19, and the whole-process time. `drl plot` draws each
set's learning curve (the training episodes' returns) into `--plots DIR`.

    python benchmarks/learning.py --sets lunarlander                  # 3 seeds of 1M steps
    python benchmarks/learning.py --sets halfcheetah hopper --jobs 2
    python benchmarks/learning.py --sets cartpole --steps 4096 --seeds 0  # a smoke run

Run directories go under `--out` (default runs/learning); a set whose runs already finished
there is judged again without retraining.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HELD_OUT = 1234
EPISODES = 20


@dataclass(frozen=True)
class Set:
    algo: str
    env_id: str
    steps: int
    seeds: tuple[int, ...]
    threshold: float
    anchor: str  # the published figure it is compared with, and its source
    random: float  # a uniformly random policy's mean return over 20 episodes (measured here; Atari: issue 19's)
    options: tuple[str, ...] = ()


SETS = {
    "cartpole": Set("ppo", "CartPole-v1", 100_000, (0, 1, 2), 475, "zoo: 500 +- 0 at 1e5", 22.1),
    "lunarlander": Set("ppo", "LunarLander-v3", 1_000_000, (0, 1, 2), 200, "zoo: 242 at 1e6", -175.3),
    "breakout": Set(
        "ppo", "ALE/Breakout-v5", 1_000_000, (0,), 15, "zoo (PPO, 1e7 steps): 398", 1.7, ("--backend", "envpool")
    ),
    "halfcheetah": Set("sac", "HalfCheetah-v5", 100_000, (0, 1), 3000, "zoo (SAC, 1e6 steps): 9535", -305.4),
    "hopper": Set("td3", "Hopper-v5", 100_000, (0,), 1500, "zoo (TD3, 1e6 steps): 3604", 18.8),
}


def drl() -> str:
    found = shutil.which("drl")
    if found is None:
        sys.exit("benchmarks/learning.py: the drl command is not on PATH (pip install -e .)")
    return found


def train(spec: Set, seed: int, steps: int, run_dir: Path) -> float:
    """Train one seed unless its run already finished; the whole process's seconds (0 if reused)."""
    status = run_dir / "run.json"
    if status.exists() and json.loads(status.read_text()).get("status") in ("finished", "solved"):
        return 0.0
    if run_dir.exists():
        shutil.rmtree(run_dir)
    command = [drl(), "train", spec.algo, spec.env_id, "--seed", str(seed), "--total-steps", str(steps)]
    command += ["--eval-every", "0", "--eval-episodes", "1", "--no-stop-when-solved", "--no-progress"]
    command += [*spec.options, "--run-dir", str(run_dir)]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - start


def judge(run_dir: Path) -> float:
    """The final policy's mean return over the held-out episodes."""
    command = [drl(), "eval", str(run_dir), "--episodes", str(EPISODES), "--seed", str(HELD_OUT), "--json"]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(json.loads(result.stdout)["mean_return"])


def interval(values: list[float]) -> float:
    """Half-width of the 95% Student's t interval of the mean (0 for one value)."""
    if len(values) < 2:
        return 0.0
    t = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}
    return t.get(len(values), 1.96) * statistics.stdev(values) / math.sqrt(len(values))


def run_set(name: str, spec: Set, steps: int, seeds: tuple[int, ...], out: Path, jobs: int) -> dict:
    runs = {seed: out / name / f"{spec.algo}_s{seed}" for seed in seeds}
    with ThreadPoolExecutor(jobs) as pool:
        seconds = list(pool.map(lambda seed: train(spec, seed, steps, runs[seed]), seeds))
        returns = list(pool.map(judge, runs.values()))
    return {"set": name, "spec": spec, "steps": steps, "seeds": seeds, "returns": returns, "seconds": seconds}


def row(result: dict) -> str:
    spec, returns = result["spec"], result["returns"]
    mean, half = statistics.mean(returns), interval(returns)
    verdict = "yes" if mean >= spec.threshold else "**no**"
    seeds = ",".join(map(str, result["seeds"]))
    per_seed = ", ".join(f"{r:.1f}" for r in returns)
    minutes = ", ".join(f"{s / 60:.1f}" if s else "reused" for s in result["seconds"])
    command = f"`python benchmarks/learning.py --sets {result['set']}`"
    return (
        f"| {spec.algo.upper()} {spec.env_id}, {result['steps']:,} steps, seeds {seeds} | {mean:.1f} +- {half:.1f} "
        f"({per_seed}) | {spec.threshold:g}: {verdict} | {spec.anchor} | {spec.random:g} | {minutes} | {command} |"
    )


HEADER = (
    "| run | held-out return, mean +- 95% (per seed) | threshold met | anchor | random | minutes per seed | command |\n"
    "|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["lunarlander"], choices=list(SETS))
    parser.add_argument("--steps", type=int, help="env steps per run (default: each set's)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default: each set's)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once, each its own process")
    parser.add_argument("--out", type=Path, default=Path("runs/learning"), help="where the run directories go")
    parser.add_argument("--table", type=Path, help="also write the table to this Markdown file")
    parser.add_argument("--plots", type=Path, help="draw each set's learning curve into this directory")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")

    lines = [HEADER]
    for name in args.sets:
        spec = SETS[name]
        seeds = tuple(args.seeds) if args.seeds else spec.seeds
        result = run_set(name, spec, args.steps or spec.steps, seeds, args.out, args.jobs)
        lines.append(row(result))
        print(lines[-1], flush=True)
        if args.plots is not None:
            args.plots.mkdir(parents=True, exist_ok=True)
            plot = [drl(), "plot", str(args.out / name), "--metric", "charts/episode_return"]
            subprocess.run([*plot, "--out", str(args.plots / f"{name}.png")], check=True, capture_output=True)
    table = "\n".join(lines)
    print("\n" + table)
    if args.table is not None:
        args.table.write_text(table + "\n")


if __name__ == "__main__":
    main()
