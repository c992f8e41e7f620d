"""The errors of envs (one that cannot be made, one that fails while running) and one-line error messages."""

from __future__ import annotations


class EnvError(ValueError):
    """An environment id or backend that cannot be made; the message says why."""


class EnvFailure(Exception):
    """A user's env that failed at run time: it raised in `reset` or `step` (in this process or
    in an async worker process), or its worker process died outright.

    Not an EnvError (bad input, found when the env is made): this is a fault while running.
    `str()` is one line, `"{env_id} raised {summary} in {call}()"`; `env_traceback` is the
    formatted traceback of the env's own exception (the user's code, theirs to debug), or
    None when there is none (a worker process that died).
    """

    def __init__(self, env_id: str, call: str, summary: str, env_traceback: str | None = None):
        super().__init__(env_id, call, summary, env_traceback)
        self.env_id = env_id
        self.call = call
        """Which call of the env failed: "reset" or "step"."""
        self.summary = summary
        """One line: "ValueError: boom", or "worker process 1 died (exit code -9, SIGKILL)"."""
        self.env_traceback = env_traceback

    def __str__(self) -> str:
        return f"{self.env_id} raised {self.summary} in {self.call}()"

    def __reduce__(self):  # pickles with any attribute set later (e.g. the trainer's step)
        return type(self), (self.env_id, self.call, self.summary, self.env_traceback), self.__dict__


def first_line(exc: BaseException) -> str:
    """The first non-empty line of `str(exc)`, stripped; the exception's type name when the
    message is empty (so that a one-line report always says something)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__
