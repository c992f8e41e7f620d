"""Hyperparameter schedules over training progress (0 at the start, 1 at total steps)."""

from __future__ import annotations

from typing import Literal

Schedule = Literal["constant", "linear"]


def scheduled(initial: float, schedule: Schedule, progress: float) -> float:
    """The value of a hyperparameter at `progress`: constant, or linear from `initial` to 0."""
    if schedule == "constant":
        return initial
    if schedule == "linear":
        return initial * max(0.0, 1.0 - progress)
    raise ValueError(f"unknown schedule {schedule!r} (choose constant or linear)")
