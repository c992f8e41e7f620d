"""Train Stable-Baselines3 and drl side by side, in one process, and compare.

Both get the same hyperparameters (read from drl's preset and mapped onto SB3's
arguments), the same env, step budget and seeds; SB3 and drl take turns going first.
Both are then evaluated by the same code on the same episodes (deterministic policy).

    python benchmarks/vs_sb3.py --algo ppo --env CartPole-v1 --seeds 0 1 2
    python benchmarks/vs_sb3.py --algo a2c --env CartPole-v1 --seeds 0 1 2
    python benchmarks/vs_sb3.py --algo ppo --whole-process --seeds 0 1 2

With --whole-process it times what a user meets instead: the whole `drl train ALGO ENV
--total-steps N --eval-every 0 --eval-episodes 20` process, start to exit, against the whole
process of a plain SB3 script doing the same work (`python -m runners.sb3_bridge`: the same
hyperparameters, N steps, one final 20-episode evaluation by drl's evaluator on the episodes
drl's final evaluation plays), alternating, one process each. `drl compare ALGO ENV` is the
user command for this comparison.

The mapping of drl's preset onto SB3's arguments and the SB3 script live in runners/sb3_bridge.py.

Wall time covers building the agent and its envs and training (drl's includes writing its
run directory: metrics, TensorBoard events, the final checkpoint); evaluation is timed apart.
Needs the `bench` extra: pip install -e .[bench]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from runners.evaluate import evaluate
from runners.run_dir import create_run_dir
from runners.sb3_bridge import SB3Policy, preset_configs, sb3_arguments, sb3_model
from runners.seeding import derive_seeds
from runners.trainer import Trainer


def configs(algo: str, env_id: str, seed: int, steps: int | None):
    """The preset's configs (runners/sb3_bridge.py), with no evaluation and no checkpoint but the final one."""
    train, agent, _ = preset_configs(algo, env_id, seed, steps)
    train.eval_episodes = 0  # no evaluation inside the timed run; both are evaluated afterwards
    train.checkpoint_every = 0  # only the final checkpoint
    train.progress = False
    return train, agent


def run_sb3(algo, train, agent, episodes):
    start = time.perf_counter()
    model = sb3_model(sb3_arguments(algo, train, agent))
    model.learn(train.total_steps)
    seconds = time.perf_counter() - start
    result = evaluate(SB3Policy(model), train.env_id, episodes, derive_seeds(train.seed).eval)
    return seconds, model.num_timesteps, result


def run_drl(train, agent, episodes, workdir: Path):
    start = time.perf_counter()
    trainer = Trainer(train, agent)
    outcome = trainer.run(create_run_dir(workdir / f"drl-{train.algo}-{train.seed}"))
    seconds = time.perf_counter() - start
    result = evaluate(trainer.agent, train.env_id, episodes, derive_seeds(train.seed).eval)
    return seconds, outcome.global_step, result


def timed(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{command[:3]} failed:\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def whole_process(args: argparse.Namespace) -> None:
    """drl train as a user runs it against a plain SB3 script, both timed as whole processes."""
    drl = shutil.which("drl")
    steps = args.steps or 100_000
    print(f"whole processes: drl train {args.algo} {args.env} --total-steps {steps} vs an SB3 script, same work")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, seed in enumerate(args.seeds):
            train, agent = configs(args.algo, args.env, seed, steps)
            sb3 = [sys.executable, "-m", "runners.sb3_bridge", json.dumps(sb3_arguments(args.algo, train, agent))]
            sb3 += ["--eval-episodes", "20", "--eval-seed", str(derive_seeds(seed).eval)]  # as drl's final evaluation
            ours = [drl, "train", args.algo, args.env, "--total-steps", str(steps), "--seed", str(seed)]
            ours += ["--eval-every", "0", "--eval-episodes", "20", "--no-progress", "--run-dir", f"{tmp}/r{seed}"]
            out = {}
            for who in ["sb3", "drl"] if i % 2 == 0 else ["drl", "sb3"]:
                seconds, stdout = timed(sb3 if who == "sb3" else ours)
                if who == "sb3":
                    result = json.loads(stdout.strip().splitlines()[-1])["mean_return"]
                else:
                    result = float(stdout.split("eval return ")[1].split()[0])
                out[who] = (seconds, result)
            rows.append(out)
            print(
                f"seed {seed}: SB3 script {out['sb3'][0]:5.1f} s (eval {out['sb3'][1]:.1f}) | drl train "
                f"{out['drl'][0]:5.1f} s (eval {out['drl'][1]:.1f}) | drl / SB3 {out['drl'][0] / out['sb3'][0]:.3f}",
                flush=True,
            )
    sb3_s = statistics.fmean(r["sb3"][0] for r in rows)
    drl_s = statistics.fmean(r["drl"][0] for r in rows)
    print(f"\nwhole process: SB3 {sb3_s:.1f} s, drl {drl_s:.1f} s; drl / SB3 {drl_s / sb3_s:.3f} (target <= 0.667)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="ppo", choices=["ppo", "a2c"])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="step budget (default: the preset's)")
    parser.add_argument("--episodes", type=int, default=20, help="evaluation episodes per agent")
    parser.add_argument("--whole-process", action="store_true", help="time drl train and an SB3 script end to end")
    args = parser.parse_args()
    if args.whole_process:
        whole_process(args)
        return

    import stable_baselines3

    print(
        f"drl vs stable-baselines3 {stable_baselines3.__version__}: {args.algo} on {args.env}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, seed in enumerate(args.seeds):
            train, agent = configs(args.algo, args.env, seed, args.steps)
            order = ["sb3", "drl"] if i % 2 == 0 else ["drl", "sb3"]
            out = {}
            for who in order:
                if who == "sb3":
                    out[who] = run_sb3(args.algo, *configs(args.algo, args.env, seed, args.steps), args.episodes)
                else:
                    out[who] = run_drl(*configs(args.algo, args.env, seed, args.steps), args.episodes, Path(tmp))
            rows.append((seed, out["sb3"], out["drl"]))
            (s_sec, s_steps, s_eval), (d_sec, d_steps, d_eval) = out["sb3"], out["drl"]
            speedup = (d_steps / d_sec) / (s_steps / s_sec)
            print(
                f"seed {seed}: SB3 {s_sec:6.1f} s {s_steps / s_sec:8,.0f} steps/s eval {s_eval.mean_return:7.1f}"
                f" +- {s_eval.std_return:5.1f} | drl {d_sec:6.1f} s {d_steps / d_sec:8,.0f} steps/s eval "
                f"{d_eval.mean_return:7.1f} +- {d_eval.std_return:5.1f} | speed-up {speedup:.2f}x",
                flush=True,
            )

    sb3_sps = sum(r[1][1] for r in rows) / sum(r[1][0] for r in rows)
    drl_sps = sum(r[2][1] for r in rows) / sum(r[2][0] for r in rows)
    print("\n| | wall time per run (s) | steps/s | eval return (mean over seeds) |")
    print("|---|---|---|---|")
    for name, k, sps in (("SB3", 1, sb3_sps), ("drl", 2, drl_sps)):
        wall = statistics.fmean(r[k][0] for r in rows)
        ret = statistics.fmean(r[k][2].mean_return for r in rows)
        print(f"| {name} | {wall:.1f} | {sps:,.0f} | {ret:.1f} |")
    print(f"\nsteps/s ratio drl / SB3: {drl_sps / sb3_sps:.2f}x over {len(rows)} seeds")


if __name__ == "__main__":
    main()
