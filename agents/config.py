"""Config errors and checks shared by every algorithm's config dataclass."""

from __future__ import annotations

import math
from typing import Any


class ConfigError(ValueError):
    """A config value the user must change; the message names the option and the fix."""


def option(field: str) -> str:
    """The command-line spelling of a config field: n_steps -> --n-steps."""
    return "--" + field.replace("_", "-")


def require(ok: bool, field: str, requirement: str, value: Any) -> None:
    """Raise ConfigError('--field must be <requirement>, got <value>') unless `ok`."""
    if not ok:
        raise ConfigError(f"{option(field)} must be {requirement}, got {value!r}")


def require_positive(cfg: Any, *fields: str) -> None:
    for name in fields:
        value = getattr(cfg, name)
        require(math.isfinite(value) and value > 0, name, "positive and finite", value)


def require_non_negative(cfg: Any, *fields: str) -> None:
    for name in fields:
        value = getattr(cfg, name)
        require(math.isfinite(value) and value >= 0, name, "zero or positive and finite", value)


def require_fraction(cfg: Any, *fields: str) -> None:
    for name in fields:
        value = getattr(cfg, name)
        require(0.0 <= value <= 1.0, name, "between 0 and 1", value)  # False for NaN too
