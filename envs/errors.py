"""The error of envs that cannot be made, and one-line error messages."""

from __future__ import annotations


class EnvError(ValueError):
    """An environment id or backend that cannot be made; the message says why."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of `str(exc)`, stripped; the exception's type name when the
    message is empty (so that a one-line report always says something)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__
