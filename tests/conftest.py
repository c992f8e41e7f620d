"""Shared helpers: the real `drl` as a subprocess, small configs, metrics readers."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# A one-node Ray cluster for a test module: a `ray start --head --block` process (one per
# pytest-xdist worker that runs tests of the module), joined by address and stopped at the end by
# killing its process group (`ray stop` would stop every Ray instance on the machine, another test
# worker's too). It declares 4 CPUs on this 2-core machine so that a run may resume with 3 workers,
# one CPU each. Ray 2.60 listens on all interfaces whatever node address it is given (it swaps
# 127.0.0.1 for a reachable one); the cluster uses Ray's token authentication, set in the
# environment of the test (and so of every drl process it starts) while the fixture lasts.
@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory):
    """The address of a one-node Ray cluster on 127.0.0.1, torn down after the module."""
    port = free_port()
    ray_cli = Path(sys.executable).parent / "ray"
    command = [
        str(ray_cli),
        "start",
        "--head",
        "--block",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--num-cpus=4",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={tmp_path_factory.mktemp('ray')}",
    ]
    # Ray's token authentication (the default for clusters started by `ray start` since 2.59): the
    # head and every process joining it (this one, and the drl processes it starts) share a token.
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16), "RAY_USAGE_STATS_ENABLED": "0"}
    scratch = {"TMPDIR": str(tmp_path_factory.mktemp("ray_tmp"))}  # what its actors leave behind (a killed one)
    head = subprocess.Popen(
        command,
        env={**drl_env(), **auth, **scratch},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert head.poll() is None, head.stderr.read().decode()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in auth.items():
                patch.setenv(name, value)
            yield address
    finally:
        # `ray start --block` takes over 30 s to honour SIGTERM (and ignores SIGINT); every Ray
        # process of the cluster is in its process group, and nothing of it needs to survive
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=30)
