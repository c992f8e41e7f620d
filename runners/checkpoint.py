"""Checkpoint files: one file each, written atomically, versioned.

A checkpoint holds everything a resume needs (see `Trainer.checkpoint_payload`): the
resolved config, the agent's weights, optimiser, normalisers and RNG, the trainer's
counters, the loop's pending observation (and, when asked, the replay buffer) and the
envs' own state.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from envs import first_line

FORMAT_VERSION = 2
CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"step_(\d+)\.pt$")


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable or not ours; the message says which."""


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:012d}.pt"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` atomically: a reader sees the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save({"format_version": FORMAT_VERSION, **payload}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint file `path` names: itself if it is a file, else the latest one of the run dir."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"no run directory or checkpoint file at {path}")
    found = sorted(p for p in (path / CHECKPOINT_DIR).glob("step_*.pt") if _NAME.search(p.name))
    if not found:
        raise CheckpointError(f"no checkpoints in {path / CHECKPOINT_DIR}")
    return found[-1]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and check a checkpoint file; CheckpointError with a one-line reason if it is not usable."""
    path = find_checkpoint(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        reason = first_line(exc)
        raise CheckpointError(f"checkpoint {path} is corrupt or not a drl checkpoint ({reason})") from None
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise CheckpointError(f"checkpoint {path} is not a drl checkpoint")
    version = payload["format_version"]
    if version != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {version}; this drl reads {FORMAT_VERSION}")
    payload["path"] = str(path)
    return payload
