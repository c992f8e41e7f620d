"""`drl compare ALGO ENV_ID`: the same preset trained with drl and with Stable-Baselines3, side by side.

For each seed, each library trains in a process of its own: drl as `python -m runners.cli
train ALGO ENV_ID --seed S --total-steps N --run-dir DIR/drl_sS` (no evaluation while it
trains, no checkpoint but the final one), SB3 as `python -m runners.sb3_bridge SPEC --save
DIR/sb3_sS` (runners/sb3_bridge.py: drl's preset mapped onto SB3's arguments, the same env,
steps and seed). The two take turns going first (the first seed drl, the second SB3, ...),
so neither always meets a cold or a warm machine. Wall time is each training process's, start
to exit. Then both trained policies play the same held-out episodes through the same code
(runners.evaluate.evaluate: drl's by `drl eval --json`, SB3's loaded here), with the evaluation
protocol of drl (deterministic, epsilon 0 for these envs) and the eval seed drl derives from
the run's seed.

The result is a table (or with --json one JSON object, also written to DIR/compare.json) and
a plot (DIR/compare.png: returns, wall times, training curves).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import envs
from agents import ConfigError, get_algorithm
from runners.cliargs import ArgumentParser, int_at_least
from runners.evaluate import evaluate, evaluation_protocol
from runners.reports import curve, read_metrics
from runners.sb3_bridge import SB3_ALGORITHMS, check_supported, load_policy, preset_configs, sb3_arguments
from runners.seeding import derive_seeds

LIBRARIES = ("drl", "sb3")
LABELS = {"drl": "drl", "sb3": "SB3"}
CURVE_KEY = "charts/episode_return"
"""drl's training return (mean of the episodes that ended since the last log)."""
SB3_WINDOW = 20
"""SB3's training curve: the mean return of the last SB3_WINDOW episodes."""


class CompareFailed(Exception):
    """A training or evaluation process of the comparison failed (not a mistake in the input)."""


def cmd_compare(args: list[str]) -> int:
    """`drl compare ALGO ENV_ID [--seeds S ...] [--steps N] [--episodes E] [--dir DIR] [--out FILE] [--json]`:
    0 when both libraries trained and were evaluated, 1 when one of the processes failed (a
    mistake in the input is a ConfigError, which the CLI reports in one line)."""
    namespace = _parser().parse_args(args)
    try:
        return _compare(namespace)
    except CompareFailed as exc:
        print(f"drl: error: {exc}", file=sys.stderr)
        return 1


def _compare(namespace: argparse.Namespace) -> int:
    sb3_version = _require_sb3()
    algo = get_algorithm(namespace.algo).name
    check_supported(algo)
    env_id, seeds, episodes = namespace.env_id, namespace.seeds, namespace.episodes
    envs.resolve_env_id(env_id)  # an unknown env id: one line now, not after a process fails
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {' '.join(map(str, seeds))} repeats a seed")
    out = namespace.out
    if out is not None and out.suffix.lower() not in (".png", ".svg"):
        raise ConfigError(f"--out {out} must end in .png or .svg")
    directory = namespace.dir or Path("runs/compare") / f"{algo}_{env_id.replace('/', '-').replace(':', '-')}"
    out = out or directory / "compare.png"

    specs = {}  # every seed's SB3 spec before any work: a preset SB3 cannot follow fails now
    for seed in seeds:
        train, agent, preset = preset_configs(algo, env_id, seed, namespace.steps, namespace.device)
        train.validate()
        train.torch_device()  # a device this machine lacks: one line now
        specs[seed] = sb3_arguments(algo, train, agent, preset)
    steps = specs[seeds[0]]["total_steps"]
    taken = [p for s in seeds for p in (directory / f"drl_s{s}", directory / f"sb3_s{s}") if p.exists()]
    if taken:
        raise ConfigError(f"{taken[0]} exists (from an earlier comparison?): remove it or give another --dir")
    deterministic, epsilon = evaluation_protocol(algo, env_id)

    _note(
        f"drl vs Stable-Baselines3 {sb3_version}: {algo} on {env_id} (preset {preset or 'none'}), {steps:,} steps, "
        f"seeds {' '.join(map(str, seeds))}, {namespace.device}; runs in {directory}"
    )
    rows = []
    for i, seed in enumerate(seeds):
        order = LIBRARIES if i % 2 == 0 else LIBRARIES[::-1]
        paths = {"drl": directory / f"drl_s{seed}", "sb3": directory / f"sb3_s{seed}"}
        commands = {
            "drl": _drl_train(algo, env_id, seed, steps, namespace.device, paths["drl"]),
            "sb3": [sys.executable, "-m", "runners.sb3_bridge", json.dumps(specs[seed]), "--save", str(paths["sb3"])],
        }
        seconds = {}
        for who in order:
            seconds[who], _ = _timed(commands[who], f"{LABELS[who]} training (seed {seed})")
            _note(f"seed {seed}: {LABELS[who]} trained in {seconds[who]:.1f} s")
        eval_seed = derive_seeds(seed).eval
        num_envs = min(episodes, 8)
        results = {
            "drl": _drl_eval(paths["drl"], episodes, eval_seed, deterministic, epsilon, num_envs),
            "sb3": _sb3_eval(algo, env_id, paths["sb3"], episodes, eval_seed, deterministic, epsilon, num_envs),
        }
        row: dict[str, Any] = {"seed": seed, "order": list(order), "first": order[0], "eval_seed": eval_seed}
        for who in LIBRARIES:
            row[who] = {**results[who], "seconds": seconds[who], "path": str(paths[who])}
        row["time_ratio"] = seconds["drl"] / seconds["sb3"]
        row["return_diff"] = row["drl"]["mean_return"] - row["sb3"]["mean_return"]
        rows.append(row)

    report = {
        "algo": algo,
        "env_id": env_id,
        "preset": preset,
        "steps": steps,
        "episodes": episodes,
        "deterministic": deterministic,
        "epsilon": epsilon,
        "device": namespace.device,
        "sb3_version": sb3_version,
        "dir": str(directory),
        "plot": str(out),
        "seeds": rows,
        "mean": _means(rows),
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_comparison(report, out)
    print(json.dumps(report) if namespace.json else format_report(report))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="drl compare",
        description="Train ALGO on ENV_ID with drl and with Stable-Baselines3 (the same preset, steps and seeds), "
        "one process per library and seed, taking turns going first; evaluate both on the same held-out episodes; "
        "print returns, wall times and their ratio, and plot them.",
    )
    parser.add_argument("algo", metavar="ALGO", help=", ".join(SB3_ALGORITHMS))
    parser.add_argument("env_id", metavar="ENV_ID", help="a Gymnasium env id, e.g. CartPole-v1")
    parser.add_argument(
        "--seeds", type=int_at_least(0), nargs="+", default=[0], metavar="S", help="seeds to train (default: 0)"
    )
    parser.add_argument(
        "--steps", type=int_at_least(1), default=None, metavar="N", help="env steps per run (default: the preset's)"
    )
    parser.add_argument(
        "--episodes", type=int_at_least(1), default=20, metavar="E", help="evaluation episodes per run (default: 20)"
    )
    parser.add_argument("--device", default="cpu", help="device both libraries train on (default: cpu)")
    parser.add_argument(
        "--dir", type=Path, default=None, metavar="DIR", help="directory of the runs (default: runs/compare/ALGO_ENV)"
    )
    parser.add_argument(
        "--out", type=Path, default=None, metavar="FILE", help="the plot, .png or .svg (default: DIR/compare.png)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser


def _require_sb3() -> str:
    """SB3's version, or a ConfigError saying how to install it."""
    try:
        import stable_baselines3
    except ImportError:
        raise ConfigError("drl compare needs stable-baselines3: pip install 'drl[bench]'") from None
    return stable_baselines3.__version__


def _note(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _drl_train(algo: str, env_id: str, seed: int, steps: int, device: str, run_dir: Path) -> list[str]:
    """`drl train` as this comparison runs it: the preset, no evaluation (both are evaluated
    afterwards by the same code), the final checkpoint only, no progress bar."""
    return [
        *(sys.executable, "-m", "runners.cli", "train", algo, env_id, "--seed", str(seed)),
        *("--total-steps", str(steps), "--run-dir", str(run_dir), "--device", device),
        *("--eval-every", "0", "--eval-episodes", "0", "--no-stop-when-solved"),
        *("--checkpoint-every", "0", "--no-progress"),
    ]


def _timed(command: list[str], what: str) -> tuple[float, str]:
    """(wall seconds, stdout) of `command` run to its end; a ConfigError for a child's own
    one-line input error, CompareFailed (with its stderr's tail shown) for any other failure."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["(no output)"]
        if done.returncode == 2 and lines[-1].startswith("drl: error: "):
            raise ConfigError(lines[-1].removeprefix("drl: error: "))
        print("\n".join(lines[-20:]), file=sys.stderr)
        raise CompareFailed(f"{what} failed with exit code {done.returncode}: {lines[-1]}")
    return seconds, done.stdout


def _drl_eval(
    run_dir: Path, episodes: int, seed: int, deterministic: bool, epsilon: float, num_envs: int
) -> dict[str, Any]:
    command = [sys.executable, "-m", "runners.cli", "eval", str(run_dir), "--episodes", str(episodes)]
    command += ["--seed", str(seed), "--deterministic" if deterministic else "--stochastic", "--epsilon", str(epsilon)]
    command += ["--num-envs", str(num_envs), "--device", "cpu", "--json"]
    _, stdout = _timed(command, f"drl eval {run_dir}")
    result = json.loads(stdout.strip().splitlines()[-1])
    keys = ("mean_return", "std_return", "returns", "global_step")
    return {("steps" if k == "global_step" else k): result[k] for k in keys}


def _sb3_eval(
    algo: str, env_id: str, path: Path, episodes: int, seed: int, deterministic: bool, epsilon: float, num_envs: int
) -> dict[str, Any]:
    policy = load_policy(algo, path / "model.zip")
    result = evaluate(policy, env_id, episodes, seed, deterministic, num_envs, epsilon=epsilon)
    steps = policy.model.num_timesteps
    return dict(mean_return=result.mean_return, std_return=result.std_return, returns=result.returns, steps=steps)


def _means(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each library's return and wall time averaged over seeds; time_ratio is the ratio of the
    mean wall times (drl / SB3), return_diff the difference of the mean returns (drl - SB3)."""
    mean: dict[str, Any] = {
        who: {
            "mean_return": statistics.fmean(r[who]["mean_return"] for r in rows),
            "seconds": statistics.fmean(r[who]["seconds"] for r in rows),
        }
        for who in LIBRARIES
    }
    mean["time_ratio"] = mean["drl"]["seconds"] / mean["sb3"]["seconds"]
    mean["return_diff"] = mean["drl"]["mean_return"] - mean["sb3"]["mean_return"]
    return mean


def format_report(report: dict[str, Any]) -> str:
    """The comparison as a table: one line per seed and the mean over seeds."""
    policy = "deterministic" if report["deterministic"] else "stochastic"
    lines = [
        f"drl vs Stable-Baselines3 {report['sb3_version']}: {report['algo']} on {report['env_id']} "
        f"(preset {report['preset'] or 'none'}), {report['steps']:,} steps per run, {report['device']}",
        f"return: mean +- std over {report['episodes']} {policy} episodes, the same ones for both; "
        "time: wall seconds of the training process",
        "",
        f"{'seed':>4}  {'first':5}  {'drl return':>18}  {'SB3 return':>18}  {'drl - SB3':>9}  "
        f"{'drl s':>7}  {'SB3 s':>7}  {'drl/SB3 time':>12}",
    ]
    for row in report["seeds"]:
        drl, sb3 = row["drl"], row["sb3"]
        lines.append(
            f"{row['seed']:>4}  {LABELS[row['first']]:5}  {_return(drl):>18}  {_return(sb3):>18}  "
            f"{row['return_diff']:>9.1f}  {drl['seconds']:>7.1f}  {sb3['seconds']:>7.1f}  {row['time_ratio']:>12.3f}"
        )
    mean = report["mean"]
    lines.append(
        f"{'mean':>4}  {'':5}  {mean['drl']['mean_return']:>18.1f}  {mean['sb3']['mean_return']:>18.1f}  "
        f"{mean['return_diff']:>9.1f}  {mean['drl']['seconds']:>7.1f}  {mean['sb3']['seconds']:>7.1f}  "
        f"{mean['time_ratio']:>12.3f}"
    )
    lines += ["", f"runs in {report['dir']}; plot {report['plot']}"]
    return "\n".join(lines)


def _return(side: dict[str, Any]) -> str:
    return f"{side['mean_return']:.1f} +- {side['std_return']:.1f}"


def plot_comparison(report: dict[str, Any], out: Path) -> None:
    """Three panels: evaluation return per seed (mean and std), training wall time per seed,
    and the training curves (drl: its logged episode return; SB3: a moving mean of its episodes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["seeds"]
    colors = {"drl": "C0", "sb3": "C1"}
    fig, (returns, times, curves) = plt.subplots(1, 3, figsize=(15, 4.5))
    x = np.arange(len(rows))
    for k, who in enumerate(LIBRARIES):
        shift = (k - 0.5) * 0.35
        mean = [r[who]["mean_return"] for r in rows]
        std = [r[who]["std_return"] for r in rows]
        returns.errorbar(x + shift, mean, yerr=std, fmt="o", capsize=4, color=colors[who], label=LABELS[who])
        times.bar(x + shift, [r[who]["seconds"] for r in rows], width=0.35, color=colors[who], label=LABELS[who])
        for r in rows:
            steps, values = _training_curve(who, Path(r[who]["path"]))
            label, marker = (LABELS[who] if r is rows[0] else None), ("." if len(steps) < 3 else None)
            curves.plot(steps, values, color=colors[who], alpha=0.8, marker=marker, label=label)
    for r, xi in zip(rows, x, strict=True):
        top = max(r["drl"]["seconds"], r["sb3"]["seconds"])
        times.annotate(f"{r['time_ratio']:.2f}x", (xi, top), xytext=(0, 3), textcoords="offset points", ha="center")
    times.margins(y=0.12)
    ticks = [f"seed {r['seed']}\n({LABELS[r['first']]} first)" for r in rows]
    for ax in (returns, times):
        ax.set_xticks(x, ticks)
        ax.legend(loc="best", fontsize="small")
        ax.grid(alpha=0.3, axis="y")
    returns.set_title(f"eval return, {report['episodes']} episodes (mean +- std)")
    times.set_title("training wall time (s), drl/SB3 above")
    curves.set_title(f"training episode return (SB3: mean of last {SB3_WINDOW})")
    curves.set_xlabel("env steps")
    curves.legend(loc="best", fontsize="small")
    curves.grid(alpha=0.3)
    fig.suptitle(
        f"{report['algo']} on {report['env_id']}: drl vs Stable-Baselines3 {report['sb3_version']}, "
        f"{report['steps']:,} steps"
    )
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def _training_curve(who: str, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(env steps, training return) of one run: drl's metrics.jsonl, SB3's episodes.json."""
    if who == "drl":
        return curve(read_metrics(path), CURVE_KEY, "steps")
    try:
        episodes = np.asarray(json.loads((path / "episodes.json").read_text()), dtype=float).reshape(-1, 2)
    except (OSError, ValueError):
        return np.zeros(0), np.zeros(0)
    window = min(SB3_WINDOW, len(episodes))
    if window == 0:
        return np.zeros(0), np.zeros(0)
    smooth = np.convolve(episodes[:, 1], np.ones(window) / window, mode="valid")
    return episodes[window - 1 :, 0], smooth
