"""Reading run directories back: the `drl runs` table and `drl plot` learning curves.

Both read only what a run writes (`run.json`, `metrics.jsonl`), so they work on runs that
are still going, finished, interrupted or crashed, and never change them.
"""

from __future__ import annotations

import json
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agents.config import ConfigError
from runners.run_dir import METRICS_FILE, STATUS_FILE, pid_alive, read_status

EVAL_KEY = "eval/mean_return"


def find_runs(paths: list[Path]) -> list[Path]:
    """Run directories (those holding run.json) among `paths` and below them, sorted."""
    found: set[Path] = set()
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path} does not exist")
        if (path / STATUS_FILE).is_file():
            found.add(path)
        elif path.is_dir():
            found.update(p.parent for p in path.rglob(STATUS_FILE))
    return sorted(found)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of metrics.jsonl; a line cut short by a crash is skipped."""
    rows = []
    try:
        lines = (Path(run_dir) / METRICS_FILE).read_text().splitlines()
    except OSError:
        return rows
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def _alive(status: dict[str, Any]) -> bool:
    """Whether the process that wrote a `running` status still runs (unknowable on another host)."""
    pid, host = status.get("pid"), status.get("host")
    return pid is None or host != socket.gethostname() or pid_alive(pid)


@dataclass
class RunSummary:
    """One line of `drl runs`."""

    run_dir: str
    algo: str
    env_id: str
    seed: int | None
    steps: int
    last_eval: float | None
    best_eval: float | None
    steps_per_second: float | None
    wall_seconds: float | None
    status: str


def summarize(run_dir: Path) -> RunSummary:
    status = read_status(run_dir)
    rows = read_metrics(run_dir)
    evals = [row[EVAL_KEY] for row in rows if EVAL_KEY in row]
    steps = int(status.get("global_step") or (rows[-1]["step"] if rows else 0))
    elapsed = [row["time/elapsed"] for row in rows if "time/elapsed" in row]
    wall = status.get("seconds") if status.get("status") != "running" else None
    wall = wall if wall is not None else (elapsed[-1] if elapsed else None)
    state = status.get("status", "unknown")
    if state == "running" and not _alive(status):
        state = "crashed"  # killed without a chance to say so
    return RunSummary(
        run_dir=str(run_dir),
        algo=status.get("algo", "?"),
        env_id=status.get("env_id", "?"),
        seed=status.get("seed"),
        steps=steps,
        last_eval=evals[-1] if evals else None,
        best_eval=max(evals) if evals else None,
        steps_per_second=steps / wall if wall else None,
        wall_seconds=wall,
        status=state,
    )


def format_table(summaries: list[RunSummary]) -> str:
    def num(value: float | None, digits: int = 1) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    header = ("run", "algo", "env", "seed", "steps", "last eval", "best eval", "steps/s", "wall s", "status")
    rows = [
        (
            s.run_dir,
            s.algo,
            s.env_id,
            "-" if s.seed is None else str(s.seed),
            f"{s.steps:,}",
            num(s.last_eval),
            num(s.best_eval),
            num(s.steps_per_second, 0),
            num(s.wall_seconds),
            s.status,
        )
        for s in summaries
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = {3, 4, 5, 6, 7, 8}
    lines = [
        "  ".join(
            cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in lines)


def to_json(summaries: list[RunSummary]) -> str:
    return json.dumps([asdict(s) for s in summaries], indent=1)


# ------------------------------------------------------------------------------ plots
def curve(rows: list[dict[str, Any]], key: str, x: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the rows holding `key`; x is env steps or the run's wall-clock seconds (time/elapsed)."""
    xs, ys = [], []
    for row in rows:
        if key in row and (x == "steps" or "time/elapsed" in row):
            xs.append(row["step"] if x == "steps" else row["time/elapsed"])
            ys.append(row[key])
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


def mean_and_band(
    curves: list[tuple[np.ndarray, np.ndarray]], points: int = 100, resamples: int = 2000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean across runs on a common grid (where all runs have data, linearly interpolated) and
    a 95% bootstrap confidence band over runs (the band is the mean for a single run)."""
    curves = [(x, y) for x, y in curves if len(x)]
    lo, hi = max(x[0] for x, _ in curves), min(x[-1] for x, _ in curves)
    if hi < lo:  # no common range: the union, each run held at its ends
        lo, hi = min(x[0] for x, _ in curves), max(x[-1] for x, _ in curves)
    grid = np.linspace(lo, hi, points) if hi > lo else np.array([lo])
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])  # [runs, points]
    mean = ys.mean(axis=0)
    if len(ys) == 1:
        return grid, mean, mean, mean
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(ys), size=(resamples, len(ys)))
    means = ys[picks].mean(axis=1)  # [resamples, points]
    low, high = np.percentile(means, [2.5, 97.5], axis=0)
    return grid, mean, low, high


def plot_runs(run_dirs: list[Path], out: Path, x: str = "steps", metric: str = EVAL_KEY) -> dict[str, int]:
    """Learning curves grouped by algo and env (mean and 95% bootstrap band across seeds) and
    steps/s, written to `out` (.png or .svg). Returns the number of runs per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[list[dict[str, Any]]]] = {}
    for run_dir in run_dirs:
        status = read_status(run_dir)
        groups.setdefault(f"{status.get('algo', '?')} {status.get('env_id', '?')}", []).append(read_metrics(run_dir))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 8), sharex=True, height_ratios=(2, 1))
    counts: dict[str, int] = {}
    for label, runs in sorted(groups.items()):
        curves = [curve(rows, metric, x) for rows in runs]
        curves = [c for c in curves if len(c[0])]
        if not curves:
            continue
        counts[label] = len(curves)
        grid, mean, low, high = mean_and_band(curves)
        (line,) = top.plot(grid, mean, label=f"{label} ({len(curves)} run{'s' * (len(curves) > 1)})")
        top.fill_between(grid, low, high, color=line.get_color(), alpha=0.25, linewidth=0)
        speed = [c for c in (curve(rows, "charts/sps", x) for rows in runs) if len(c[0])]
        if speed:
            grid, mean, low, high = mean_and_band(speed)
            bottom.plot(grid, mean, color=line.get_color())
            bottom.fill_between(grid, low, high, color=line.get_color(), alpha=0.25, linewidth=0)
    if not counts:
        plt.close(fig)
        raise ConfigError(f"no run among {len(run_dirs)} has logged {metric}")
    top.set_ylabel(metric)
    top.set_title("mean across runs, 95% bootstrap confidence band")
    top.legend(loc="best", fontsize="small")
    top.grid(alpha=0.3)
    bottom.set_ylabel("env steps/s")
    bottom.set_xlabel("env steps" if x == "steps" else "wall-clock seconds of the run (time/elapsed)")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return counts
