"""The run directory: resolved config, status, metrics, TensorBoard events, checkpoints.

RUN_DIR/config.yaml       the resolved config (algorithm, run options, preset)
RUN_DIR/run.json          status (running, finished, interrupted, crashed), last step, wandb id
RUN_DIR/metrics.jsonl     one JSON object per log event, "step" = env steps
RUN_DIR/tensorboard/      TensorBoard events with the same metric names
RUN_DIR/checkpoints/      step_<env steps>.pt, one file per checkpoint
RUN_DIR/videos/           eval_step_<env steps>.mp4, evaluation episodes (--eval-video-every)
RUN_DIR/wandb/            wandb's files, when --logger wandb
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Any

import yaml

from agents.config import ConfigError

CONFIG_FILE = "config.yaml"
STATUS_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` so that readers never see a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


LOCK_FILE = ".lock"
LOCK_ENV = "DRL_RUN_DIR_LOCKED"
"""Set by a process that holds a run directory's lock for its children (DDP's torchrun workers)."""
_locks: dict[str, int] = {}  # run directory -> the descriptor whose lock this process holds


def pid_alive(pid: int | str) -> bool:
    """Whether process `pid` of this machine still runs (True when it runs as another user)."""
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def lock_run_dir(path: Path) -> None:
    """Make this process the one writer of the run directory `path` (which exists), for as long
    as it lives; ConfigError naming the holder if another live process has it. The lock is the
    kernel's (flock), so a killed process does not leave it stuck."""
    key = str(Path(path).resolve())
    if key in _locks or os.environ.get(LOCK_ENV) == key:
        return
    fd = os.open(Path(path) / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ConfigError(
            f"run directory {path} is being written by another drl process (pid {holder}); "
            "wait for it to end or stop it first"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _locks[key] = fd


def lock_for_children(path: Path) -> dict[str, str]:
    """Environment variables telling child processes that this one holds `path`'s lock."""
    return {LOCK_ENV: str(Path(path).resolve())}


def check_run_dir_free(path: Path) -> None:
    """Refuse a run directory that already holds files: a new run never overwrites another."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(p.name != LOCK_FILE for p in path.iterdir())):
        raise ConfigError(
            f"run directory {path} already exists and is not empty; "
            f"continue it with `drl train --resume {path}` or choose another --run-dir"
        )


def create_run_dir(path: Path) -> Path:
    """Make a new, empty run directory."""
    check_run_dir_free(path)
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create run directory {path}: {exc.strerror or exc}") from None
    return path


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    write_atomic(Path(run_dir) / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))


def read_status(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def update_status(run_dir: Path, **fields: Any) -> None:
    status = read_status(run_dir)
    status.update(fields)
    write_atomic(Path(run_dir) / STATUS_FILE, json.dumps(status, indent=1) + "\n")
