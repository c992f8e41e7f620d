"""Training progress for people: steps, steps/s, recent return, ETA.

On a terminal: rich's live progress bar. Elsewhere (a log file, a cluster job): one plain
line on stderr at every tenth of the run.
"""

from __future__ import annotations

import sys


class ProgressBar:
    def __init__(self, total: int, completed: int, enabled: bool, description: str):
        self.total, self.description = total, description
        self.bar = None
        self.next_tenth: int | None = None  # plain mode: report when completed passes this tenth
        if not enabled:
            return
        if not sys.stderr.isatty():
            self.next_tenth = completed * 10 // total + 1
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
        )
        self.task = self.bar.add_task(description, total=total, completed=completed, sps="-", ret="-")
        self.bar.start()

    def update(self, completed: int, sps: float, episode_return: float | None = None) -> None:
        ret = "-" if episode_return is None else f"{episode_return:.1f}"
        if self.bar is not None:
            self.bar.update(self.task, completed=completed, sps=f"{sps:,.0f}", ret=ret)
        elif self.next_tenth is not None and completed * 10 >= self.next_tenth * self.total:
            self.next_tenth = completed * 10 // self.total + 1
            eta = max(self.total - completed, 0) / max(sps, 1e-9)
            print(
                f"drl: {self.description}: {completed}/{self.total} steps ({100 * completed / self.total:.0f}%), "
                f"{sps:,.0f} steps/s, return {ret}, ETA {eta:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
