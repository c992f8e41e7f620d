"""benchmarks/learning.py, the learning benchmark of the presets, on a smoke-sized set: it trains
each seed with the real `drl`, judges it on held-out episodes, writes the table and the plot,
and reuses finished runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import drl_env, run_drl

ROOT = Path(__file__).parent.parent


def test_the_learning_benchmark_trains_judges_and_tabulates(tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "learning.py"), "--sets", "cartpole", "--steps", "2048"]
    command += ["--seeds", "0", "1", "--jobs", "2", "--out", "R", "--table", "T.md", "--plots", "P"]
    first = subprocess.run(command, cwd=tmp_path, env=drl_env(), capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    table = (tmp_path / "T.md").read_text().splitlines()
    assert table[0].startswith("| run | held-out return") and len(table) == 3
    row = table[2]
    assert row.startswith("| PPO CartPole-v1, 2,048 steps, seeds 0,1 |") and "| zoo: 500 +- 0 at 1e5 | 22.1 |" in row
    returns = []
    for seed in (0, 1):
        run = tmp_path / "R" / "cartpole" / f"ppo_s{seed}"
        assert json.loads((run / "run.json").read_text())["status"] == "finished"
        judged = run_drl("eval", str(run), "--episodes", "20", "--seed", "1234", "--json", cwd=tmp_path)
        returns.append(json.loads(judged.stdout)["mean_return"])
    assert f"({returns[0]:.1f}, {returns[1]:.1f})" in row  # the held-out episodes of each seed
    assert (tmp_path / "P" / "cartpole.png").stat().st_size > 1000
    again = subprocess.run(command, cwd=tmp_path, env=drl_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "| reused, reused |" in again.stdout, again.stderr
