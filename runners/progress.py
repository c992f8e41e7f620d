"""A progress bar for training on a terminal: steps, steps/s, recent return, ETA."""

from __future__ import annotations

import sys


class ProgressBar:
    """rich's progress bar when stderr is a terminal and it is enabled; silent otherwise."""

    def __init__(self, total: int, completed: int, enabled: bool, description: str):
        self.bar = None
        if not (enabled and sys.stderr.isatty()):
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[sps]:>8} steps/s"),
            TextColumn("return {task.fields[ret]}"),
            TimeRemainingColumn(),
            console=Console(file=sys.stderr),
            transient=False,
        )
        self.task = self.bar.add_task(description, total=total, completed=completed, sps="-", ret="-")
        self.bar.start()

    def update(self, completed: int, sps: float | None = None, episode_return: float | None = None) -> None:
        if self.bar is None:
            return
        fields = {}
        if sps is not None:
            fields["sps"] = f"{sps:,.0f}"
        if episode_return is not None:
            fields["ret"] = f"{episode_return:.1f}"
        self.bar.update(self.task, completed=completed, **fields)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
