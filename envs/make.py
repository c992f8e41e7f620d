"""`make`: the one entry point for batched environments."""

from __future__ import annotations

import importlib
import os
from typing import Any

import gymnasium as gym
import torch

from envs import memory
from envs.atari import is_atari, make_atari
from envs.vector import SnapshotWrapper, TorchVectorEnv

memory.register()

BACKENDS = ("gym", "async", "native", "envpool")
"""gym: Gymnasium's SyncVectorEnv (envs stepped in turn in this process);
async: Gymnasium's AsyncVectorEnv (one worker process per env);
native: our torch implementation of the env, all envs as one tensor program on the device;
envpool: EnvPool's C++ thread pool (Atari and MuJoCo ids; the `envpool` extra)."""

# Namespaces whose envs register themselves when their package is imported.
_PROVIDERS = {"ALE": "ale_py"}


class EnvError(ValueError):
    """An environment id or backend that cannot be made; the message says why."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def resolve_env_id(env_id: str) -> gym.envs.registration.EnvSpec:
    """The registered spec of `env_id`, importing `module` first for ids like
    `module:EnvName-v0` and the provider package for namespaced ids like `ALE/Pong-v5`."""
    name = env_id
    if ":" in env_id:
        module, name = env_id.split(":", 1)
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise EnvError(f"cannot import module {module!r} for env {env_id!r}: {_first_line(exc)}") from None
    namespace = name.split("/", 1)[0] if "/" in name else None
    if namespace in _PROVIDERS:
        try:
            gym.register_envs(importlib.import_module(_PROVIDERS[namespace]))
        except ImportError:
            raise EnvError(f"env {env_id!r} needs the package {_PROVIDERS[namespace]!r}; install it") from None
    try:
        return gym.spec(name)
    except gym.error.Error as exc:
        raise EnvError(f"unknown environment id {env_id!r}: {_first_line(exc)}") from None


def make(
    env_id: str,
    num_envs: int = 1,
    backend: str = "gym",
    seed: int | None = None,
    device: torch.device | str = "cpu",
    training: bool = True,
    video_dir: str | None = None,
    video_prefix: str = "episode",
    **env_kwargs: Any,
) -> TorchVectorEnv:
    """`num_envs` copies of `env_id` as one batched env returning tensors on `device`.

    Any registered Gymnasium id works, including a user's own as `module:EnvName-v0`.
    `seed` seeds the first `reset()`: env i then starts from seed + i. Atari games get the
    standard preprocessing (`envs.atari`); `training` adds its episodic life and reward
    clipping, which evaluation envs go without. With `video_dir`, env 0 renders rgb_array
    frames and Gymnasium's RecordVideo writes its first episode there as
    `{video_prefix}-episode-0.mp4` (gym and async backends).
    """
    if backend not in BACKENDS:
        raise EnvError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if num_envs < 1:
        raise EnvError(f"num_envs must be at least 1, got {num_envs}")
    if video_dir is not None and backend not in ("gym", "async"):
        raise EnvError(f"videos are recorded with the gym or async backend, not {backend}")
    if backend == "native":
        return _make_native(env_id, num_envs, seed, device, env_kwargs)
    if backend == "envpool":
        return _make_envpool(env_id, num_envs, seed, device, training, env_kwargs)
    spec = resolve_env_id(env_id)
    atari = is_atari(spec)

    if video_dir is not None:  # pygame renders off-screen: no display or audio device needed
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

    def make_one(index: int):
        def thunk() -> gym.Env:
            kwargs = {**env_kwargs, "render_mode": "rgb_array"} if video_dir and index == 0 else env_kwargs
            env = make_atari(spec, training, **kwargs) if atari else gym.make(spec, **kwargs)
            if video_dir and index == 0:
                env = gym.wrappers.RecordVideo(
                    env, str(video_dir), episode_trigger=lambda episode: episode == 0, name_prefix=video_prefix
                )
            return SnapshotWrapper(env, index)

        return thunk

    fns = [make_one(i) for i in range(num_envs)]
    mode = gym.vector.AutoresetMode.SAME_STEP
    try:
        if backend == "async":
            vector_env = gym.vector.AsyncVectorEnv(fns, autoreset_mode=mode)
        else:
            vector_env = gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)
    except gym.error.Error as exc:
        raise EnvError(f"cannot make {env_id!r}: {_first_line(exc)}") from None
    return TorchVectorEnv(vector_env, device, seed, scores_from_info=atari)


def _make_envpool(env_id: str, num_envs: int, seed: int | None, device: torch.device | str, training: bool, kwargs):
    try:
        from envs.envpool_env import EnvPoolVectorEnv
    except ImportError:
        raise EnvError("--backend envpool needs the package 'envpool'; install it (pip install envpool)") from None
    try:
        return EnvPoolVectorEnv(env_id, num_envs, device, seed, training, **kwargs)
    except ImportError:
        raise EnvError("--backend envpool needs the package 'envpool'; install it (pip install envpool)") from None
    except KeyError:
        raise EnvError(f"EnvPool has no env {env_id!r} (use --backend gym for it)") from None
    except (TypeError, ValueError, RuntimeError) as exc:
        raise EnvError(f"cannot make {env_id!r} with EnvPool: {_first_line(exc)}") from None


def _make_native(env_id: str, num_envs: int, seed: int | None, device: torch.device | str, kwargs: dict):
    from envs.native import NATIVE_ENVS, make_native

    if env_id not in NATIVE_ENVS:
        raise EnvError(
            f"{env_id!r} has no native version; native envs: {', '.join(sorted(NATIVE_ENVS))} "
            "(use --backend gym or async for other envs)"
        )
    try:
        return make_native(env_id, num_envs, device, seed, **kwargs)
    except TypeError as exc:
        raise EnvError(f"cannot make native {env_id!r}: {_first_line(exc)}") from None
