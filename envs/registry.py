"""The registry of env backends: `envs.make(..., backend=NAME)` looks NAME up here.

A backend is a factory

    factory(env_id: str, num_envs: int, seed: int | None, device: torch.device,
            training: bool, **env_kwargs) -> VectorEnvBackend

registered under a name with `register_backend`. The built-in ones (gym, async, native,
envpool) register themselves in `envs/make.py`; `backend_names()` lists every registered
name in registration order (the CLI's --backend choices come from it). A factory that
records videos names `video_dir` and `video_prefix` among its parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from envs.errors import EnvError
from envs.interface import VectorEnvBackend


@dataclass(frozen=True)
class Backend:
    """One registered env backend."""

    name: str
    factory: Callable[..., VectorEnvBackend]
    summary: str
    """One line for --help."""


_BACKENDS: dict[str, Backend] = {}


def register_backend(
    name: str, factory: Callable[..., VectorEnvBackend], summary: str, *, replace: bool = False
) -> Backend:
    """Make `envs.make(..., backend=name)` call `factory`; ValueError if `name` is taken
    (unless `replace`)."""
    if name in _BACKENDS and not replace:
        raise ValueError(f"an env backend named {name!r} is already registered (pass replace=True to replace it)")
    backend = Backend(name, factory, " ".join(summary.split()))
    _BACKENDS[name] = backend
    return backend


def unregister_backend(name: str) -> None:
    """Remove the backend `name` (for tests); KeyError if there is none."""
    del _BACKENDS[name]


def backend_names() -> tuple[str, ...]:
    """The names of the registered backends, in registration order."""
    return tuple(_BACKENDS)


def get_backend(name: str) -> Backend:
    """The backend registered as `name`; EnvError naming the registered ones if there is none."""
    try:
        return _BACKENDS[name]
    except (KeyError, TypeError):
        raise EnvError(f"unknown backend {name!r}; choose one of: {', '.join(_BACKENDS)}") from None
