"""`drl compare`: drl and Stable-Baselines3 trained side by side, one process per library and
seed, taking turns going first (runners/compare.py, runners/sb3_bridge.py).

The end-to-end case trains PPO on CartPole-v1 for 2,048 steps per run (two seeds, four training
processes, two `drl eval` processes): about 35 s on the 2-core machine. It checks the report, not
learning: a few thousand steps teach neither library much.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from conftest import drl_env, run_drl

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """The one stderr line of a command that failed on its input (exit 2), holding every needle."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drl: error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_compare_trains_both_libraries_in_turn_and_reports_returns_times_and_ratio(tmp_path):
    pytest.importorskip("stable_baselines3")
    args = ["compare", "ppo", "CartPole-v1", "--seeds", "0", "1", "--steps", "2048", "--episodes", "3"]
    result = run_drl(*args, "--dir", "cmp", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # one JSON object, and nothing else on stdout
    assert (report["algo"], report["env_id"], report["steps"], report["episodes"]) == ("ppo", "CartPole-v1", 2048, 3)
    assert report == json.loads((tmp_path / "cmp" / "compare.json").read_text())

    rows = report["seeds"]
    assert [row["seed"] for row in rows] == [0, 1]
    assert [row["order"] for row in rows] == [["drl", "sb3"], ["sb3", "drl"]]  # drl first, then SB3 first
    assert [row["first"] for row in rows] == ["drl", "sb3"]
    for row in rows:
        for who in ("drl", "sb3"):
            side = row[who]
            assert math.isfinite(side["mean_return"]) and side["mean_return"] > 0, (who, side)
            assert math.isfinite(side["std_return"]) and side["std_return"] >= 0
            assert len(side["returns"]) == 3 and side["steps"] == 2048
            assert side["seconds"] > 0
        assert row["time_ratio"] == pytest.approx(row["drl"]["seconds"] / row["sb3"]["seconds"])
        assert row["return_diff"] == pytest.approx(row["drl"]["mean_return"] - row["sb3"]["mean_return"])
        assert (tmp_path / row["drl"]["path"] / "run.json").is_file()
        assert (tmp_path / row["sb3"]["path"] / "model.zip").is_file()
    mean = report["mean"]
    for who in ("drl", "sb3"):
        assert mean[who]["seconds"] == pytest.approx(sum(row[who]["seconds"] for row in rows) / 2)
    assert mean["time_ratio"] == pytest.approx(mean["drl"]["seconds"] / mean["sb3"]["seconds"])

    plot = tmp_path / report["plot"]
    assert plot == tmp_path / "cmp" / "compare.png"
    assert plot.read_bytes()[:8] == PNG_SIGNATURE

    # the same report as a table: a line per seed with both returns, both times and their ratio, then the mean
    from runners.compare import format_report

    table = format_report(report).splitlines()
    seed_lines = [line for line in table if line.split()[:2] in (["0", "drl"], ["1", "SB3"])]
    assert len(seed_lines) == 2
    for line, row in zip(seed_lines, rows, strict=True):
        assert f"{row['drl']['mean_return']:.1f} +- {row['drl']['std_return']:.1f}" in line
        assert f"{row['sb3']['mean_return']:.1f} +- {row['sb3']['std_return']:.1f}" in line
        times = [f"{row['drl']['seconds']:.1f}", f"{row['sb3']['seconds']:.1f}", f"{row['time_ratio']:.3f}"]
        assert line.split()[-3:] == times
    assert any(line.startswith("mean") and line.endswith(f"{mean['time_ratio']:.3f}") for line in table)

    again = run_drl(*args, "--dir", "cmp", cwd=tmp_path)  # the runs are there: refused before any work
    one_line_error(again, "cmp/drl_s0 exists", "--dir")


def test_compare_without_stable_baselines3_says_what_to_install(tmp_path):
    code = (
        "import sys; sys.modules['stable_baselines3'] = None\n"
        "from runners.cli import main\n"
        "sys.exit(main(['compare', 'ppo', 'CartPole-v1']))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=drl_env(), cwd=tmp_path)
    line = one_line_error(result)
    assert line == "drl: error: drl compare needs stable-baselines3: pip install 'drl[bench]'"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "args, needles",
    [
        (["appo", "CartPole-v1"], ["Stable-Baselines3 has no appo", "ppo, a2c, dqn, sac, td3, ddpg"]),
        (["ppo", "CartPoleNoVel-v1"], ["preset CartPoleNoVel-v1", "no Stable-Baselines3 counterpart"]),
        (["ppo", "NoSuchEnv-v0"], ["unknown environment id 'NoSuchEnv-v0'"]),
    ],
)
def test_compare_refuses_what_sb3_cannot_run_in_one_line(tmp_path, capsys, args, needles):
    pytest.importorskip("stable_baselines3")
    from runners.cli import main

    assert main(["compare", *args, "--dir", str(tmp_path / "cmp")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("drl: error: "), lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not (tmp_path / "cmp").exists()
