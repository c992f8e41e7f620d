"""Shared helpers: the real `drl` as a subprocess, small configs, metrics readers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

TESTS_DIR = Path(__file__).parent
sys.path.insert(0, str(TESTS_DIR))  # toy_envs and wandb_reader, importable as plain modules

os.environ["WANDB_MODE"] = "offline"  # never reach for the network, never ask for a login
os.environ["WANDB_SILENT"] = "true"
# One torch thread per test process (and per `drl` it starts): the suite runs in two pytest-xdist
# workers on two cores, and two threads each would make every small op wait for a busy core.
os.environ.setdefault("OMP_NUM_THREADS", "1")


torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def drl_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    return env


def run_drl(*args: str, cwd: Path, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed `drl` console script (with extra environment variables `env`)."""
    drl = shutil.which("drl")
    assert drl is not None, "the drl console script is not installed (pip install -e .)"
    return subprocess.run(
        [drl, *args], cwd=cwd, env={**drl_env(), **(env or {})}, capture_output=True, text=True, timeout=timeout
    )


def read_metrics(run_dir: Path, keep_wall_clock: bool = False) -> list[dict]:
    """metrics.jsonl as dicts, without the machine-speed fields unless asked."""
    from runners.loggers import WALL_CLOCK_PREFIXES

    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    if keep_wall_clock:
        return rows
    return [{k: v for k, v in row.items() if not k.startswith(WALL_CLOCK_PREFIXES)} for row in rows]


@pytest.fixture
def small_ppo():
    """A fast PPO CartPole run config: 8 envs x 32 steps per iteration."""
    from agents import PPOConfig
    from runners.config import TrainConfig

    train = TrainConfig(
        algo="ppo",
        env_id="CartPole-v1",
        total_steps=8192,
        num_envs=8,
        seed=3,
        device="cpu",
        log_every=512,
        eval_every=4096,
        eval_episodes=3,
        checkpoint_every=4096,
        progress=False,
    )
    algo = PPOConfig(
        n_steps=32,
        batch_size=64,
        n_epochs=2,
        learning_rate=1e-3,
        lr_schedule="linear",
        normalize_obs=True,
        normalize_reward=True,
    )
    return train, algo
