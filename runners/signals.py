"""Stopping a run on SIGINT/SIGTERM, promptly and without losing it.

The first signal asks the run to stop: between iterations the trainer sees the request,
writes a checkpoint of the last completed iteration and ends (exit 130). Work that may
take long and changes no training state (creating envs, evaluating, recording a video)
runs inside `StopRequest.interruptible()`, where the first signal ends it at once with
`Interrupted`; a checkpoint write is never interrupted by the first signal, so it
completes. A second signal aborts wherever the process is (`Aborted`): files are written
atomically, so what was on disk before stays whole.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The first stop signal arrived during work that can be abandoned (evaluation, video, env
    creation). A BaseException, as KeyboardInterrupt is: the signal may land inside a user's env,
    whose `except Exception` (or ours, that turns an env's exceptions into EnvFailure) must not
    take it for the env's own error."""


class Aborted(BaseException):
    """A second stop signal: end now. (A BaseException, so that no `except Exception` keeps the run going.)"""


class StopRequest:
    """A run's stop request; `install()` makes SIGINT and SIGTERM set it (main thread only)."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""
        self._interruptible = 0
        self._previous: dict[int, Any] = {}

    def __call__(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise Aborted(signal.Signals(signum).name)
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        when = "now" if self._interruptible else "after this iteration"
        print(f"\ndrl: {self.signal_name}: stopping {when} (again to abort)", file=sys.stderr)
        if self._interruptible:
            raise Interrupted(self.signal_name)

    def install(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self) for sig in SIGNALS}
        return self

    def __enter__(self) -> StopRequest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """A block that a stop request ends at once (raising Interrupted), also one already made."""
        if self.requested:
            raise Interrupted(self.signal_name)
        self._interruptible += 1
        try:
            yield
        finally:
            self._interruptible -= 1
