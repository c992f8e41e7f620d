"""Train Stable-Baselines3 and drl off-policy agents side by side and compare.

Both get the same hyperparameters (drl's preset, the rl-baselines3-zoo's, mapped onto SB3's
arguments), the same env, step budget and seeds; SB3 and drl take turns going first. Every
run is a fresh Python process, so no process-wide setting of one run (denormal flushing,
matmul precision, thread pools) reaches the next. Both are then evaluated by the same code
(drl's) on the same episodes (deterministic policy).

    python benchmarks/vs_sb3_off_policy.py --algo sac --seeds 0 1 2   # Pendulum-v1, 20k steps
    python benchmarks/vs_sb3_off_policy.py --algo dqn --seeds 0 1 2   # CartPole-v1, 50k steps
    python benchmarks/vs_sb3_off_policy.py --algo td3 --seeds 0 1 2   # Pendulum-v1, 20k steps

Wall time covers building the agent and its envs and training (drl's includes writing its
run directory: metrics, TensorBoard events, the final checkpoint); evaluation is timed apart.

Each side runs with its defaults. drl's are those of `drl train` with the preset: the run's
process-wide options applied as `drl train` applies them to its own process
(`runners.precision.set_process_options`):
- `flush_denormal` (on): flush denormal floats to zero (torch.set_flush_denormal). Adam's
  moments of dead ReLU units decay through the denormal range, where x86 arithmetic is
  many times slower; SB3 runs with torch's default (off).
- `fast_matmul` (TD3 presets, SAC's but Pendulum's, which computes its hidden layers in
  bfloat16 instead): oneDNN's fast float32 matmuls where a startup check finds them as accurate
  as float32 (torch.backends.mkldnn.matmul.fp32_precision = "bf16").
- `compile` (SAC presets): the autograd gradient step through torch.compile. Its wall time
  includes compiling, or loading the compiled graphs from TorchInductor's on-disk cache when
  an earlier run on this machine compiled them. With --fresh-compile-cache, the drl runs of
  this invocation get a new, empty cache directory: the first one compiles from scratch (as
  on a fresh machine), the later ones load its graphs.
- the objects built before training are frozen out of the garbage collector's scans
  (`runners.precision.freeze_startup_objects`), as `drl train` does once its trainer is built.
The flags below give the other comparisons:

    --sb3-flush-denormal   SB3 with denormals flushed as well
    --sb3-fast-matmul      SB3 with the fast matmul path on as well
    --drl-exact-matmul     drl with fast_matmul off
    --drl-no-compile       drl with the gradient step uncompiled
    --fresh-compile-cache  drl's compiled step starting from an empty compile cache (above)

The mapping of drl's preset onto SB3's arguments lives in runners/sb3_bridge.py; `drl compare
ALGO ENV` is the user command for this comparison.

Needs the `bench` extra: pip install -e .[bench]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from vs_sb3 import configs as preset_configs

from runners.evaluate import evaluate
from runners.precision import (
    cpu_matmul_precision,
    denormals_flushed,
    enable_fast_cpu_matmul,
    flush_denormals,
    freeze_startup_objects,
    restore_cpu_matmul_precision,
    set_process_options,
)
from runners.run_dir import create_run_dir
from runners.sb3_bridge import SB3Policy, sb3_arguments, sb3_model
from runners.seeding import derive_seeds
from runners.trainer import Trainer

ENVS = {"sac": "Pendulum-v1", "dqn": "CartPole-v1", "td3": "Pendulum-v1"}
SAC_TARGET = 0.4  # drl / SB3 wall time (issue 16: the compiled autograd SAC)


# ------------------------------------------------------------------ CPU matmul precision
def matmul_precision() -> str:
    return cpu_matmul_precision() or "n/a"


def set_default_matmul() -> None:
    """Torch's default float32 matmuls on the CPU (undo drl's fast_matmul)."""
    restore_cpu_matmul_precision("none")


def fast_matmul_available() -> bool:
    """Whether drl's check accepts the fast path on this CPU (the flag is left at its default)."""
    ok = enable_fast_cpu_matmul()
    set_default_matmul()
    return ok


# ------------------------------------------------------------------ configs
def configs(algo: str, seed: int, steps: int | None, args: argparse.Namespace | None = None):
    """The preset's configs, as vs_sb3.py times them, with the --drl-* changes."""
    train, agent = preset_configs(algo, ENVS[algo], seed, steps)
    if args is not None:
        if args.drl_exact_matmul:
            train.fast_matmul = False
        if args.drl_no_compile:
            train.compile = False
    return train, agent


# ------------------------------------------------------------------ runs (one per process)
def run_sb3(args: argparse.Namespace, seed: int) -> dict:
    train, agent = configs(args.algo, seed, args.steps, args)
    if args.sb3_flush_denormal:
        flush_denormals()
    if args.sb3_fast_matmul:
        enable_fast_cpu_matmul()
    start = time.perf_counter()
    model = sb3_model(sb3_arguments(args.algo, train, agent))
    model.learn(train.total_steps)
    seconds = time.perf_counter() - start
    settings = settings_now()
    set_default_matmul()
    result = evaluate(SB3Policy(model), train.env_id, args.eval_episodes, derive_seeds(train.seed).eval)
    return outcome(seconds, model.num_timesteps, result, settings)


def run_drl(args: argparse.Namespace, seed: int) -> dict:
    train, agent = configs(args.algo, seed, args.steps, args)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        set_process_options(train)  # as `drl train` does for its own process
        trainer = Trainer(train, agent)
        freeze_startup_objects()  # as `drl train` does
        result = trainer.run(create_run_dir(Path(tmp) / f"drl-{train.algo}-{train.seed}"))
        seconds = time.perf_counter() - start
    settings = {**settings_now(), "compile": train.compile, "update s": round(trainer.loop.seconds["update"], 1)}
    set_default_matmul()
    evaluation = evaluate(trainer.agent, train.env_id, args.eval_episodes, derive_seeds(train.seed).eval)
    return outcome(seconds, result.global_step, evaluation, settings)


def settings_now() -> dict:
    """The process-wide settings a run ended with: matmul precision, denormals."""
    return {"matmul": matmul_precision(), "denormals flushed": round(denormals_flushed(), 2)}


def outcome(seconds: float, steps: int, result, settings: dict) -> dict:
    return dict(
        seconds=seconds, steps=steps, mean_return=result.mean_return, std_return=result.std_return, settings=settings
    )


def in_subprocess(who: str, seed: int, env: dict | None = None) -> dict:
    """One run in a fresh interpreter (this script with --worker), its outcome read from stdout."""
    command = [sys.executable, __file__, *sys.argv[1:], "--worker", who, "--worker-seed", str(seed)]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"{who} seed {seed} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", default="sac", choices=list(ENVS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=None, help="step budget (default: the preset's)")
    parser.add_argument("--eval-episodes", type=int, default=10, help="evaluation episodes per agent")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave)")
    parser.add_argument("--sb3-flush-denormal", action="store_true", help="SB3 with denormals flushed to zero")
    parser.add_argument("--sb3-fast-matmul", action="store_true", help="SB3 with drl's fast matmul path on")
    parser.add_argument("--drl-exact-matmul", action="store_true", help="drl with fast_matmul off")
    parser.add_argument("--drl-no-compile", action="store_true", help="drl's gradient step uncompiled")
    parser.add_argument(
        "--fresh-compile-cache", action="store_true", help="drl's runs start from an empty TorchInductor cache"
    )
    parser.add_argument("--worker", choices=["sb3", "drl"], help=argparse.SUPPRESS)
    parser.add_argument("--worker-seed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        run = run_sb3 if args.worker == "sb3" else run_drl
        print(json.dumps(run(args, args.worker_seed)))
        return

    import stable_baselines3

    print(
        f"drl vs stable-baselines3 {stable_baselines3.__version__}: {args.algo} on {ENVS[args.algo]}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, one process per run"
    )
    print(
        f"fast matmul path (bf16) {'passes' if fast_matmul_available() else 'fails or is missing in'} drl's "
        f"accuracy check on this CPU; settings each run ended with are in brackets"
    )
    env = None
    if args.fresh_compile_cache:
        cache = tempfile.mkdtemp(prefix="drl-inductor-")
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
        print(f"drl's compile cache starts empty: {cache}")
    rows = []
    for i, seed in enumerate(args.seeds):
        order = ["sb3", "drl"] if i % 2 == 0 else ["drl", "sb3"]
        out = {who: in_subprocess(who, seed, env if who == "drl" else None) for who in order}
        rows.append((seed, out["sb3"], out["drl"]))
        s, d = out["sb3"], out["drl"]
        print(
            f"seed {seed} ({order[0]} first): "
            f"SB3 {s['seconds']:6.1f} s {s['steps'] / s['seconds']:6,.0f} steps/s "
            f"eval {s['mean_return']:7.1f} +- {s['std_return']:5.1f} {s['settings']} | "
            f"drl {d['seconds']:6.1f} s {d['steps'] / d['seconds']:6,.0f} steps/s "
            f"eval {d['mean_return']:7.1f} +- {d['std_return']:5.1f} {d['settings']} | "
            f"wall drl/SB3 {d['seconds'] / s['seconds']:.3f}",
            flush=True,
        )

    print("\n| | wall time per run (s) | steps/s | eval return (mean over seeds) |")
    print("|---|---|---|---|")
    for name, k in (("SB3", 1), ("drl", 2)):
        wall = statistics.fmean(r[k]["seconds"] for r in rows)
        sps = statistics.fmean(r[k]["steps"] / r[k]["seconds"] for r in rows)
        ret = statistics.fmean(r[k]["mean_return"] for r in rows)
        print(f"| {name} | {wall:.1f} | {sps:,.0f} | {ret:.1f} |")
    ratio = statistics.fmean(r[2]["seconds"] / r[1]["seconds"] for r in rows)
    print(f"\nwall time drl / SB3: {ratio:.3f} (mean over {len(rows)} seeds: drl {1 / ratio:.2f}x as fast)")
    if args.algo == "sac":
        print(f"SAC target ratio <= {SAC_TARGET}: {'yes' if ratio <= SAC_TARGET else 'no'}")


if __name__ == "__main__":
    main()
