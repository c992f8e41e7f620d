"""Metric sinks: metrics.jsonl and TensorBoard always, Weights & Biases on request.

Every sink gets the same metric names with env steps as the x-axis. Evaluation videos go
to TensorBoard (as animated GIFs: TensorBoard has no video player) and to wandb (as MP4). On resume, the JSONL
and TensorBoard sinks drop what the stopped run logged after its checkpoint, so they read
as one uninterrupted run; wandb cannot rewrite history, so a wandb run keeps those steps
and the resumed run logs them again.
"""

from __future__ import annotations

import contextlib
import json
import math
import netrc
import os
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from envs import first_line
from runners.run_dir import METRICS_FILE, write_atomic

WALL_CLOCK_PREFIXES = ("time/", "charts/sps")
"""Metrics that depend on the machine's speed, not on the seed (left out of determinism checks)."""


class JsonlSink:
    """One JSON object per line: {"step": env steps, "<metric>": value, ...}."""

    def __init__(self, run_dir: Path, resume_step: int | None):
        self.path = Path(run_dir) / METRICS_FILE
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if _step_of(line) <= resume_step]
            write_atomic(self.path, "".join(line + "\n" for line in kept))
        self.file = open(self.path, "ab", buffering=0)  # noqa: SIM115 (held open for the run, closed in close())

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Append one line; a write that fails (a full disk) takes back what it wrote of the
        line, so the file never holds half a line, and raises."""
        record = {"step": step, **{k: _finite(v) for k, v in metrics.items()}}
        data = memoryview((json.dumps(record) + "\n").encode())
        end = os.fstat(self.file.fileno()).st_size
        try:
            while data:
                data = data[self.file.write(data) :]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self.file.fileno(), end)
            raise

    def close(self) -> None:
        self.file.close()


def _step_of(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf  # an unreadable (half-written) line goes


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


class TensorBoardSink:
    """Scalars under the same names, in RUN_DIR/tensorboard."""

    def __init__(self, run_dir: Path, resume_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        purge = None if resume_step is None else resume_step + 1
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"), purge_step=purge)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def log_video(self, step: int, tag: str, path: Path) -> None:
        """The MP4 at `path` as an animated GIF image summary, at most 320 pixels wide.
        (torch's add_video needs moviepy 1.x, whose API moviepy 2 removed.)"""
        import io

        import imageio.v3 as iio
        from PIL import Image
        from tensorboard.compat.proto.summary_pb2 import Summary

        fps = iio.immeta(path).get("fps") or 30
        frames = [Image.fromarray(frame) for frame in iio.imiter(path)]
        if not frames:
            return
        scale = min(1.0, 320 / frames[0].width)
        size = (round(frames[0].width * scale), round(frames[0].height * scale))
        frames = [frame.resize(size) for frame in frames]
        buffer = io.BytesIO()
        frames[0].save(
            buffer, format="GIF", save_all=True, append_images=frames[1:], duration=round(1000 / fps), loop=0
        )
        image = Summary.Image(height=size[1], width=size[0], colorspace=3, encoded_image_string=buffer.getvalue())
        self.writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def wandb_mode() -> tuple[str, str | None]:
    """'online' when there is a login and the server answers within 2 s, else 'offline' and why.
    WANDB_MODE, when set, decides."""
    if not os.environ.get("WANDB_MODE", "x"):
        del os.environ["WANDB_MODE"]  # set but empty: wandb itself would reject it
    if "WANDB_MODE" in os.environ:
        return os.environ["WANDB_MODE"], None  # checked by TrainConfig.validate
    base = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    host = urlparse(base).hostname or "api.wandb.ai"
    has_key = bool(os.environ.get("WANDB_API_KEY"))
    if not has_key:
        try:
            has_key = netrc.netrc().authenticators(host) is not None
        except (OSError, netrc.NetrcParseError):
            has_key = False
    if not has_key:
        return "offline", "no wandb login found"
    try:
        socket.create_connection((host, urlparse(base).port or 443), timeout=2).close()
    except OSError:
        return "offline", f"{host} is not reachable"
    return "online", None


class WandbSink:
    """A wandb run in RUN_DIR/wandb; offline (synced later with `wandb sync`) when there is
    no login or network, so training never waits on it."""

    def __init__(self, run_dir: Path, config: dict[str, Any], name: str, run_id: str | None, options: dict[str, Any]):
        mode, reason = wandb_mode()
        if reason:
            print(
                f"drl: wandb: {reason}; logging offline to {run_dir}/wandb (upload later with `wandb sync`)",
                file=sys.stderr,
            )
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        def init(mode: str):
            return wandb.init(
                dir=str(run_dir),
                config=config,
                name=name,
                id=run_id,
                resume="allow",
                mode=mode,
                settings=wandb.Settings(init_timeout=60, console="off", x_disable_stats=True),
                **options,
            )

        try:
            self.run = init(mode)
        except Exception as exc:  # wandb raises many kinds; a dashboard must not stop training
            if mode != "online":
                raise
            print(f"drl: wandb: online init failed ({first_line(exc)}); logging offline", file=sys.stderr)
            self.run = init("offline")
        self.run.define_metric("global_step")
        self.run.define_metric("*", step_metric="global_step")
        self.id = self.run.id

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log({**metrics, "global_step": step})

    def log_video(self, step: int, tag: str, path: Path) -> None:
        import wandb

        self.run.log({tag: wandb.Video(str(path), format="mp4"), "global_step": step})

    def save_model(self, path: Path) -> None:
        """The checkpoint at `path` as a model artifact of this run."""
        import wandb

        artifact = wandb.Artifact(f"model-{self.run.id}", type="model", metadata={"checkpoint": Path(path).name})
        artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def close(self) -> None:
        self.run.finish()


class MetricLogger:
    """Fans each log call out to every sink."""

    def __init__(self, sinks: list[Any]):
        self.sinks = sinks

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for sink in self.sinks:
            sink.log(step, metrics)

    def log_video(self, step: int, tag: str, path: Path) -> None:
        for sink in self.sinks:
            if hasattr(sink, "log_video"):
                sink.log_video(step, tag, path)

    def save_model(self, path: Path) -> None:
        for sink in self.sinks:
            if hasattr(sink, "save_model"):
                sink.save_model(path)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
