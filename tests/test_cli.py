"""The real `drl` console script, as a subprocess: train, eval, resume, and bad input."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import drl_env, read_metrics, run_drl

QUICK = ["--total-steps", "2048", "--eval-episodes", "2", "--log-every", "256", "--no-progress"]


def tree_digest(path: Path) -> dict[str, str]:
    """Every file's hash, but the one-writer lock's (it names the pid of its last holder)."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One short PPO CartPole run made with the CLI, shared by the tests below."""
    cwd = tmp_path_factory.mktemp("cli")
    result = run_drl("train", "ppo", "CartPole-v1", "--seed", "1", "--run-dir", "run", *QUICK, cwd=cwd)
    assert result.returncode == 0, result.stderr
    assert "trained 2048 steps" in result.stdout
    return cwd / "run"


def test_train_writes_a_complete_run_directory(trained):
    assert {"config.yaml", "run.json", "metrics.jsonl", "tensorboard", "checkpoints"} <= {
        p.name for p in trained.iterdir()
    }
    assert list((trained / "tensorboard").glob("events.out.tfevents.*"))
    config = (trained / "config.yaml").read_text()
    assert "n_steps: 32" in config and "preset: CartPole-v1" in config  # the preset was applied
    assert json.loads((trained / "run.json").read_text())["status"] == "finished"
    assert read_metrics(trained)[-1]["step"] == 2048


def test_eval_json(trained):
    result = run_drl("eval", str(trained), "--episodes", "3", "--json", cwd=trained.parent)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["episodes"] == 3 and len(report["returns"]) == 3
    assert report["mean_return"] == pytest.approx(sum(report["returns"]) / 3)
    assert {"std_return", "checkpoint", "deterministic"} <= set(report)
    assert report["deterministic"] is True
    # The default eval seed is the run's: the same episodes as the final eval in training.
    final = [row for row in read_metrics(trained) if "eval/mean_return" in row][-1]
    again = json.loads(run_drl("eval", str(trained), "--episodes", "2", "--json", cwd=trained.parent).stdout)
    assert again["mean_return"] == pytest.approx(final["eval/mean_return"])


def test_eval_of_a_checkpoint_file_with_stochastic_actions(trained):
    checkpoint = sorted((trained / "checkpoints").glob("*.pt"))[-1]
    result = run_drl("eval", str(checkpoint), "--episodes", "2", "--stochastic", "--seed", "5", cwd=trained.parent)
    assert result.returncode == 0, result.stderr
    assert "mean return" in result.stdout and "stochastic policy, seed 5" in result.stdout


def test_help_lists_options_with_preset_defaults(tmp_path):
    result = run_drl("train", "ppo", "CartPole-v1", "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "--n-steps" in result.stdout and "(default: 32)" in result.stdout
    assert "Steps each env takes per rollout" in result.stdout
    assert not list(tmp_path.iterdir())  # help writes nothing


def test_the_cli_module_runs_as_python_dash_m(tmp_path):
    # `python -m runners.cli` (under a profiler or debugger) is the same program as `drl`
    command = [sys.executable, "-m", "runners.cli", "train", "ppo", "CartPole-v1", "--help"]
    result = subprocess.run(command, capture_output=True, text=True, env=drl_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--n-steps" in result.stdout


def test_interrupt_then_resume_matches_an_uninterrupted_run(tmp_path):
    args = [
        "--seed",
        "2",
        "--total-steps",
        "40000",
        "--checkpoint-every",
        "0",
        "--eval-every",
        "0",
        "--eval-episodes",
        "2",
        "--log-every",
        "1024",
        "--no-progress",
    ]
    drl = shutil.which("drl")
    proc = subprocess.Popen(
        [drl, "train", "ppo", "CartPole-v1", "--run-dir", "stopped", *args],
        cwd=tmp_path,
        env=drl_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = tmp_path / "stopped" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "continue with: drl train --resume stopped" in err
    stopped_at = json.loads((tmp_path / "stopped" / "run.json").read_text())["global_step"]
    assert 0 < stopped_at < 40000

    resumed = run_drl("train", "--resume", "stopped", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    whole = run_drl("train", "ppo", "CartPole-v1", "--run-dir", "whole", *args, cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    assert read_metrics(tmp_path / "stopped") == read_metrics(tmp_path / "whole")


def one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize(
    "args, needles",
    [
        (["train", "dqm", "CartPole-v1"], ["unknown algorithm 'dqm'", "ppo"]),
        (["train", "ppo", "NoSuchEnv-v0"], ["unknown environment id 'NoSuchEnv-v0'"]),
        (["train", "ppo", "LunarLander-v3", "--backend", "native"], ["no native version", "native envs: Acrobot-v1"]),
        (["train", "ppo", "toy_envs:MultiBinaryAction-v0"], ["ppo cannot act in", "MultiBinary", "supports Discrete"]),
        (["train", "dqn", "Pendulum-v1"], ["dqn cannot act in Pendulum-v1's action space Box", "supports Discrete"]),
        (["train", "sac", "CartPole-v1"], ["sac cannot act in CartPole-v1's action space Discrete(2)", "supports Box"]),
        (["train", "sac", "Pendulum-v1", "--tau", "0"], ["--tau must be in (0, 1], got 0.0"]),
        (["train", "dqn", "CartPole-v1", "--buffer-size", "3", "--n-step", "3"], ["--buffer-size 3 must hold more"]),
        (["train", "ppo", "CartPole-v1", "--n-steps", "-5"], ["--n-steps must be positive and finite, got -5"]),
        (["train", "ppo", "CartPole-v1", "--learning-rate", "fast"], ["--learning-rate", "expected a number"]),
        (["train", "ppo", "CartPole-v1", "--total-steps", "1.5"], ["--total-steps", "expected an integer"]),
        (["train", "ppo", "CartPole-v1", "--learning-rate", "inf"], ["--learning-rate must be positive and finite"]),
        (["train", "ppo", "CartPole-v1", "--run-dir", "/proc/drl-run"], ["cannot create run directory /proc/drl-run"]),
        (["train", "ppo", "CartPole-v1", "--n-stpes", "5"], ["unrecognized arguments: --n-stpes"]),
        (["train", "ppo", "CartPole-v1", "--preset", "nope"], ["unknown preset 'nope'"]),
        (["train", "ppo"], ["missing ENV_ID"]),
        (["train", "--resume", "no_such_run"], ["no run directory at no_such_run"]),
        (["eval", "no_such_run"], ["no run directory or checkpoint file at no_such_run"]),
        (["frobnicate"], ["unknown command 'frobnicate'"]),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, needles):
    one_line_error(run_drl(*args, cwd=tmp_path), *needles)
    assert not list(tmp_path.iterdir())


def test_eval_rejects_bad_values(trained):
    one_line_error(run_drl("eval", str(trained), "--episodes", "-1", cwd=trained.parent), "--episodes", "at least 1")


def test_existing_run_dir_is_not_touched(trained):
    before = tree_digest(trained)
    result = run_drl("train", "ppo", "CartPole-v1", "--run-dir", str(trained), *QUICK, cwd=trained.parent)
    one_line_error(result, "already exists and is not empty", "--resume")
    assert tree_digest(trained) == before


def test_corrupt_checkpoint(trained, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(trained, broken)
    latest = sorted((broken / "checkpoints").glob("*.pt"))[-1]
    latest.write_bytes(latest.read_bytes()[: len(latest.read_bytes()) // 2])  # a torn copy
    before = tree_digest(broken)
    one_line_error(run_drl("eval", str(broken), cwd=tmp_path), "is corrupt or not a drl checkpoint")
    one_line_error(
        run_drl("train", "--resume", str(broken), "--total-steps", "4096", cwd=tmp_path),
        "is corrupt or not a drl checkpoint",
    )
    assert tree_digest(broken) == before


def test_resume_of_a_finished_run_exits_0_and_says_how_to_continue(trained):
    """A scheduler that relaunches a finished job must not see a failure."""
    before = tree_digest(trained)
    result = run_drl("train", "--resume", str(trained), cwd=trained.parent)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "already finished (2048 of 2048 steps)" in lines[0] and "--total-steps" in lines[0]
    assert tree_digest(trained) == before


def test_wandb_offline_run_holds_metrics_and_config(tmp_path):
    from wandb_reader import history_and_config

    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    assert env.get("WANDB_MODE") == "offline"
    result = run_drl("train", "ppo", "CartPole-v1", "--run-dir", "w", "--logger", "wandb", *QUICK, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    logs = list((tmp_path / "w" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(logs) == 1
    rows, config = history_and_config(logs[0])
    keys = set().union(*rows)
    assert {"global_step", "charts/episode_return", "losses/value_loss", "charts/sps", "eval/mean_return"} <= keys
    assert json.loads(config["env_id"]) == "CartPole-v1" and json.loads(config["algo"]) == "ppo"
    assert json.loads(config["agent"])["n_steps"] == 32
    # the last eval logged to wandb is the one in metrics.jsonl
    final = [row for row in read_metrics(tmp_path / "w") if "eval/mean_return" in row][-1]
    wandb_final = [row for row in rows if "eval/mean_return" in row][-1]
    assert json.loads(wandb_final["eval/mean_return"]) == pytest.approx(final["eval/mean_return"])


def test_bad_wandb_mode_is_refused_before_anything_is_written(tmp_path):
    result = run_drl(
        "train",
        "ppo",
        "CartPole-v1",
        "--logger",
        "wandb",
        "--run-dir",
        "w",
        *QUICK,
        cwd=tmp_path,
        env={"WANDB_MODE": "bogus"},
    )
    one_line_error(result, "WANDB_MODE='bogus' is not a wandb mode")
    assert not list(tmp_path.iterdir())


def test_resume_from_a_checkpoint_that_does_not_fit_its_config(trained, tmp_path):
    import torch

    broken = tmp_path / "mismatch"
    shutil.copytree(trained, broken)
    latest = sorted((broken / "checkpoints").glob("*.pt"))[-1]
    payload = torch.load(latest, weights_only=True)
    payload["config"]["agent"]["network"]["hidden_sizes"] = [32, 32]  # the weights are 64 wide
    torch.save(payload, latest)
    before = tree_digest(broken)
    one_line_error(
        run_drl("train", "--resume", str(broken), "--total-steps", "4096", cwd=tmp_path), "does not fit its config"
    )
    one_line_error(run_drl("eval", str(broken), cwd=tmp_path), "does not fit its config")
    assert tree_digest(broken) == before
