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
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import torch

from envs import first_line
from runners.cliargs import warn
from runners.run_dir import pid_alive

FORMAT_VERSION = 2
CHECKPOINT_DIR = "checkpoints"
_NAME = re.compile(r"step_(\d+)\.pt$")


class CheckpointError(Exception):
    """A checkpoint that is missing, unreadable or not ours; the message says which."""


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR / f"step_{step:012d}.pt"


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` atomically and durably: a reader sees the old file or the new
    one, never half, and once this returns the new one survives a power cut. On a failed write
    (a full disk, SIGINT twice) the partial file is removed and any earlier checkpoint is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            writer = _Writer(fh, path)
            try:
                torch.save({"format_version": FORMAT_VERSION, **payload}, writer)
            except RuntimeError:
                if writer.error is not None:  # torch reports a failed write without its cause
                    raise writer.error from None
                raise
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)  # the rename itself
    finally:
        tmp.unlink(missing_ok=True)


class _Writer:
    """A file for torch.save that keeps the OSError of a failed write (a full disk), which
    torch's zip writer turns into a RuntimeError that does not say why."""

    def __init__(self, fh: Any, path: Path):
        self.fh, self.path, self.error = fh, path, None

    def write(self, data: Any) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            exc.filename = str(self.path)  # (not the temporary file's name)
            self.error = exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot sync a directory
    finally:
        os.close(fd)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """The run's checkpoint files, oldest (fewest steps) first."""
    return sorted(p for p in (Path(run_dir) / CHECKPOINT_DIR).glob("step_*.pt") if _NAME.search(p.name))


def prune(run_dir: str | Path, keep: int, protect: Collection[str] = ()) -> None:
    """Delete all but the newest `keep` checkpoints (0: keep all) and those named in `protect`,
    and the partial files of writes that a killed process left behind."""
    directory = Path(run_dir) / CHECKPOINT_DIR
    for stale in directory.glob(".step_*.pt.tmp-*"):
        if not pid_alive(stale.name.rsplit("-", 1)[-1]):
            stale.unlink(missing_ok=True)
    if keep <= 0:
        return
    for path in list_checkpoints(run_dir)[:-keep]:
        if path.name not in protect:
            path.unlink(missing_ok=True)


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint file `path` names: itself if it is a file, else the latest one of the run dir."""
    path = Path(path)
    if path.is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"no run directory or checkpoint file at {path}")
    found = list_checkpoints(path)
    if not found:
        raise CheckpointError(f"no checkpoints in {path / CHECKPOINT_DIR}")
    return found[-1]


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", skipped: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Read and check a checkpoint file, or the newest one of a run directory that loads (telling
    `skipped`, default a warning on stderr, of newer damaged ones); CheckpointError with a
    one-line reason if there is none that is usable."""
    path = Path(path)
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise CheckpointError(f"no checkpoints in {path / CHECKPOINT_DIR}")
        for candidate in reversed(found[1:]):
            try:
                return _load_file(candidate, map_location)
            except CheckpointError as exc:
                (skipped or warn)(f"skipping damaged checkpoint: {exc}")
        return _load_file(found[0], map_location)
    return _load_file(find_checkpoint(path), map_location)


def _load_file(path: Path, map_location: str | torch.device) -> dict[str, Any]:
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
