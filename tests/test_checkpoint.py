"""Checkpoint files: atomic writes, latest lookup, and clear errors for bad files."""

import pytest
import torch

from runners.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    checkpoint_path,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)


def test_save_load_and_find_latest(tmp_path):
    for step in (100, 2000, 30):
        save_checkpoint(
            checkpoint_path(tmp_path, step), {"global_step": step, "w": torch.ones(2) * step, "env": [b"\x00pickled"]}
        )
    assert find_checkpoint(tmp_path).name == "step_000000002000.pt"
    payload = load_checkpoint(tmp_path)
    assert payload["global_step"] == 2000 and payload["format_version"] == FORMAT_VERSION
    assert payload["env"] == [b"\x00pickled"]
    assert not list((tmp_path / "checkpoints").glob(".*tmp*"))  # no temp file left behind


def test_an_interrupted_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = checkpoint_path(tmp_path, 1)
    save_checkpoint(path, {"global_step": 1})

    def failing_save(obj, fh):
        fh.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError):
        save_checkpoint(path, {"global_step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["global_step"] == 1
    assert not list((tmp_path / "checkpoints").glob(".*tmp*"))


def test_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no run directory or checkpoint file"):
        load_checkpoint(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="no checkpoints in"):
        load_checkpoint(tmp_path)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="is corrupt or not a drl checkpoint"):
        load_checkpoint(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match="is not a drl checkpoint"):
        load_checkpoint(other)
    future = tmp_path / "future.pt"
    torch.save({"format_version": 99}, future)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(future)
