"""Dashboards read back: TensorBoard events, offline wandb files, MP4 videos, `drl runs`,
`drl plot` and `drl dashboard`."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import read_metrics, run_drl

QUICK = ["--total-steps", "2048", "--eval-episodes", "2", "--log-every", "256", "--no-progress"]


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory) -> Path:
    """A PPO CartPole run with every dashboard on: TensorBoard, wandb (offline), eval videos."""
    base = tmp_path_factory.mktemp("dash")
    result = run_drl(
        "train", "ppo", "CartPole-v1", "--run-dir", "R", "--logger", "tensorboard,wandb", "--eval-video-every", "1024",
        "--wandb-tags", "exp1", "sweep", "--wandb-save-model", "--eval-every", "1024", *QUICK, cwd=base,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return base / "R"


def test_tensorboard_events_hold_the_scalars_of_metrics_jsonl_and_the_videos(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logged_run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    rows = read_metrics(logged_run, keep_wall_clock=True)
    expected = {(key, row["step"]): value for row in rows for key, value in row.items() if key != "step"}
    scalars = {(key, e.step): e.value for key in events.Tags()["scalars"] for e in events.Scalars(key)}
    assert set(expected) <= set(scalars)
    for key, value in expected.items():
        assert scalars[key] == pytest.approx(value, rel=1e-6, abs=1e-6), key
    for key in ("charts/episode_return", "charts/sps", "losses/value_loss", "eval/mean_return", "time/update"):
        assert any(k == key for k, _ in scalars), key
    videos = events.Images("eval/video")
    assert [v.step for v in videos] == [1024, 2048]
    assert videos[0].encoded_image_string[:6] in (b"GIF87a", b"GIF89a") and videos[0].width <= 320


def test_eval_videos_are_valid_mp4s(logged_run):
    import imageio.v3 as iio

    paths = sorted((logged_run / "videos").glob("*.mp4"))
    assert [p.name for p in paths] == ["eval_step_1024.mp4", "eval_step_2048.mp4"]
    frames = iio.imread(paths[0])
    assert frames.ndim == 4 and frames.shape[0] >= 1 and frames.shape[-1] == 3


def test_drl_eval_video_records_the_first_episode(logged_run, tmp_path):
    import imageio.v3 as iio

    result = run_drl(
        "eval", str(logged_run), "--episodes", "1", "--video", str(tmp_path / "x.mp4"), "--json", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    frames = iio.imread(report["video"])
    assert frames.shape[0] == report["lengths"][0] + 1  # the reset frame, then one per step
    bad = run_drl("eval", str(logged_run), "--video", "x.gif", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "must end in .mp4" in bad.stderr


def test_offline_wandb_run_holds_metrics_config_tags_videos_and_the_model(logged_run):
    from wandb_reader import history_and_config, read_records

    logs = list((logged_run / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1
    rows, config = history_and_config(logs[0])
    keys = set().union(*rows)
    assert {"global_step", "charts/episode_return", "losses/value_loss", "eval/mean_return"} <= keys
    videos = [row for row in rows if row.get("eval/video/_type") == '"video-file"']
    assert [json.loads(row["global_step"]) for row in videos] == [1024, 2048]
    assert json.loads(config["env_id"]) == "CartPole-v1"
    records = read_records(logs[0])
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert runs and list(runs[0].tags) == ["exp1", "sweep"] and runs[0].display_name == "ppo-CartPole-v1-s0"
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    assert [a.type for a in artifacts] == ["model"]
    assert len(list(logs[0].parent.glob("files/media/videos/eval/*.mp4"))) == 2


def test_drl_runs_lists_runs_with_their_returns_and_status(tmp_path):
    for seed in (0, 1):
        result = run_drl(
            "train", "ppo", "CartPole-v1", "--seed", str(seed), "--run-dir", f"runs/s{seed}", *QUICK, cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
    # a run killed without a word: status "running" from a process that no longer exists
    dead = tmp_path / "runs" / "dead"
    dead.mkdir()
    finished = subprocess.Popen(["true"])
    finished.wait()
    pid = finished.pid
    status = {"status": "running", "algo": "ppo", "env_id": "CartPole-v1", "seed": 9, "global_step": 512}
    (dead / "run.json").write_text(json.dumps({**status, "pid": pid, "host": socket.gethostname()}))

    result = run_drl("runs", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    table = {Path(row["run_dir"]).name: row for row in json.loads(result.stdout)}
    assert set(table) == {"s0", "s1", "dead"}
    for seed in (0, 1):
        row = table[f"s{seed}"]
        evals = [r["eval/mean_return"] for r in read_metrics(tmp_path / "runs" / f"s{seed}") if "eval/mean_return" in r]
        assert (row["status"], row["seed"], row["steps"]) == ("finished", seed, 2048)
        assert row["last_eval"] == evals[-1] and row["best_eval"] == max(evals)
        assert row["steps_per_second"] > 0 and row["wall_seconds"] > 0
    assert table["dead"]["status"] == "crashed" and table["dead"]["last_eval"] is None

    text = run_drl("runs", "runs", cwd=tmp_path).stdout.splitlines()
    assert text[0].split()[:4] == ["run", "algo", "env", "seed"] and len(text) == 4
    assert "finished" in text[2] and "crashed" in text[1]  # sorted by path: dead, s0, s1
    missing = run_drl("runs", "nowhere", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1


def test_drl_plot_draws_three_seeds_with_a_band(tmp_path):
    for seed in (0, 1, 2):
        result = run_drl(
            "train", "ppo", "CartPole-v1", "--seed", str(seed), "--run-dir", f"runs/s{seed}", "--eval-every", "512",
            *QUICK, cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
    result = run_drl("plot", "runs", "--out", "curves.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "ppo CartPole-v1: 3" in result.stdout
    png = (tmp_path / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    timed = run_drl("plot", "runs/s0", "runs/s1", "--x", "time", "--out", "t.svg", cwd=tmp_path)
    assert timed.returncode == 0 and "<svg" in (tmp_path / "t.svg").read_text()
    bad = run_drl("plot", "runs", "--out", "curves.txt", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_band_is_the_bootstrap_interval_of_the_mean():
    import numpy as np

    from runners.reports import mean_and_band

    x = np.array([0.0, 10.0])
    curves = [(x, np.array([0.0, 10.0])), (x, np.array([0.0, 20.0])), (x, np.array([0.0, 30.0]))]
    grid, mean, low, high = mean_and_band(curves, points=3)
    assert grid.tolist() == [0.0, 5.0, 10.0] and mean.tolist() == [0.0, 10.0, 20.0]
    assert low[0] == high[0] == 0.0  # no spread at x=0
    assert 10.0 <= low[2] < 20.0 < high[2] <= 30.0  # resampled means of 10, 20, 30 lie within [10, 30]
    single = mean_and_band(curves[:1], points=3)
    assert single[2].tolist() == single[3].tolist() == single[1].tolist()


def test_drl_dashboard_serves_tensorboard(tmp_path):
    (tmp_path / "runs").mkdir()
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    import shutil

    from conftest import drl_env

    proc = subprocess.Popen(
        [shutil.which("drl"), "dashboard", "runs", "--port", str(port)],
        cwd=tmp_path, env=drl_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert "TensorBoard on runs" in proc.stdout.readline()
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://localhost:{port}/data/environment", timeout=2) as response:
                    assert response.status == 200
                    assert "data_location" in json.loads(response.read())
                    break
            except OSError:
                assert time.time() < deadline, "TensorBoard did not answer within 60 s"
                time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    missing = run_drl("dashboard", "nowhere", cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
