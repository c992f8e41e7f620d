"""`make`: the one entry point for batched environments."""

from __future__ import annotations

import functools
import importlib
import inspect
import os
from typing import Any

import gymnasium as gym
import torch

from envs import memory
from envs.atari import ATARI_V4_ID, ATARI_V5_ID, FRAME_STACK, is_atari, make_atari
from envs.errors import EnvError, first_line
from envs.interface import VectorEnvBackend
from envs.registry import backend_names, get_backend, register_backend
from envs.render import is_render_failure, render_error
from envs.vector import GuardedAsyncVectorEnv, MarkFaults, SnapshotWrapper, TorchVectorEnv

memory.register()

# Namespaces whose envs register themselves when their package is imported.
_PROVIDERS = {"ALE": "ale_py"}


def resolve_env_id(env_id: str) -> gym.envs.registration.EnvSpec:
    """The registered spec of `env_id`, importing `module` first for ids like
    `module:EnvName-v0` and the provider package for namespaced ids like `ALE/Pong-v5`."""
    name = env_id
    if ":" in env_id:
        module, name = env_id.split(":", 1)
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise EnvError(f"cannot import module {module!r} for env {env_id!r}: {first_line(exc)}") from None
    namespace = name.split("/", 1)[0] if "/" in name else None
    if namespace in _PROVIDERS:
        try:
            gym.register_envs(importlib.import_module(_PROVIDERS[namespace]))
        except ImportError:
            raise EnvError(f"env {env_id!r} needs the package {_PROVIDERS[namespace]!r}; install it") from None
    try:
        return gym.spec(name)
    except gym.error.Error as exc:
        raise EnvError(f"unknown environment id {env_id!r}: {first_line(exc)}") from None


def frame_stack(env_id: str) -> int:
    """How many frames each observation of `env_id` stacks along its first axis, newest last,
    under the backends here: `envs.atari.FRAME_STACK` for Atari games (Gymnasium's and EnvPool's
    ids alike), 0 for other envs."""
    if ATARI_V5_ID.match(env_id) or ATARI_V4_ID.match(env_id):
        return FRAME_STACK
    try:
        return FRAME_STACK if is_atari(resolve_env_id(env_id)) else 0
    except EnvError:
        return 0


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
) -> VectorEnvBackend:
    """`num_envs` copies of `env_id` as one batched env returning tensors on `device`.

    `backend` names a registered backend (`backend_names()`; see `envs.registry`). Any
    registered Gymnasium id works with gym and async, including a user's own as
    `module:EnvName-v0`. `seed` seeds the first `reset()`: env i then starts from seed + i.
    Atari games get the standard preprocessing (`envs.atari`); `training` adds its episodic
    life and reward clipping, which evaluation envs go without. With `video_dir`, env 0
    renders rgb_array frames and Gymnasium's RecordVideo writes its first episode there as
    `{video_prefix}-episode-0.mp4` (backends whose factory takes `video_dir`: gym and async).
    """
    spec = get_backend(backend)
    if num_envs < 1:
        raise EnvError(f"num_envs must be at least 1, got {num_envs}")
    if video_dir is not None:
        if not _records_video(spec.factory):
            recorders = " or ".join(name for name in backend_names() if _records_video(get_backend(name).factory))
            raise EnvError(f"videos are recorded with the {recorders} backend, not {backend}")
        env_kwargs = {**env_kwargs, "video_dir": video_dir, "video_prefix": video_prefix}
    return spec.factory(env_id, num_envs, seed, torch.device(device), training, **env_kwargs)


def _records_video(factory: Any) -> bool:
    """Whether `factory` names `video_dir` among its parameters."""
    try:
        return "video_dir" in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def _make_gymnasium(
    asynchronous: bool,
    env_id: str,
    num_envs: int,
    seed: int | None,
    device: torch.device,
    training: bool,
    video_dir: str | None = None,
    video_prefix: str = "episode",
    **env_kwargs: Any,
) -> TorchVectorEnv:
    spec = resolve_env_id(env_id)
    atari = is_atari(spec)

    if video_dir is not None:  # pygame renders off-screen: no display or audio device needed
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

    def make_one(index: int):
        def thunk() -> gym.Env:
            kwargs = {**env_kwargs, "render_mode": "rgb_array"} if video_dir and index == 0 else env_kwargs
            env = make_atari(spec, training, **kwargs) if atari else gym.make(spec, **kwargs)
            env = MarkFaults(env)  # its exceptions in reset and step become EnvFailure
            if video_dir and index == 0:
                env = gym.wrappers.RecordVideo(
                    env, str(video_dir), episode_trigger=lambda episode: episode == 0, name_prefix=video_prefix
                )
            return SnapshotWrapper(env, index)

        return thunk

    fns = [make_one(i) for i in range(num_envs)]
    mode = gym.vector.AutoresetMode.SAME_STEP
    try:
        if asynchronous:
            vector_env = GuardedAsyncVectorEnv(fns, autoreset_mode=mode)
        else:
            vector_env = gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)
    except gym.error.Error as exc:
        raise EnvError(f"cannot make {env_id!r}: {first_line(exc)}") from None
    except Exception as exc:  # e.g. MUJOCO_GL naming a backend whose library is missing: mujoco fails to import
        if is_render_failure(exc):
            raise render_error(env_id, exc) from None
        raise
    return TorchVectorEnv(vector_env, device, seed, scores_from_info=atari, env_id=env_id)


make_gym = functools.partial(_make_gymnasium, False)
"""The gym backend: Gymnasium's SyncVectorEnv in a `TorchVectorEnv`."""
make_async = functools.partial(_make_gymnasium, True)
"""The async backend: Gymnasium's AsyncVectorEnv (one worker process per env, watched:
`GuardedAsyncVectorEnv`) in a `TorchVectorEnv`."""


def make_envpool(
    env_id: str, num_envs: int, seed: int | None, device: torch.device, training: bool, **kwargs: Any
) -> VectorEnvBackend:
    """The envpool backend: EnvPool's C++ thread pool (imported only when asked for)."""
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
        raise EnvError(f"cannot make {env_id!r} with EnvPool: {first_line(exc)}") from None


def make_native_backend(
    env_id: str, num_envs: int, seed: int | None, device: torch.device, training: bool, **kwargs: Any
) -> VectorEnvBackend:
    """The native backend: our torch version of the env, all envs as one tensor program on `device`."""
    from envs.native import NATIVE_ENVS, make_native

    if env_id not in NATIVE_ENVS:
        raise EnvError(
            f"{env_id!r} has no native version; native envs: {', '.join(sorted(NATIVE_ENVS))} "
            "(use --backend gym or async for other envs)"
        )
    try:
        return make_native(env_id, num_envs, device, seed, **kwargs)
    except TypeError as exc:
        raise EnvError(f"cannot make native {env_id!r}: {first_line(exc)}") from None


register_backend("gym", make_gym, "Gymnasium's SyncVectorEnv: envs stepped in turn in this process")
register_backend("async", make_async, "Gymnasium's AsyncVectorEnv: one worker process per env")
register_backend(
    "native", make_native_backend, "our torch version of a classic-control env: all envs as tensors on the device"
)
register_backend("envpool", make_envpool, "EnvPool's C++ thread pool (Atari and MuJoCo ids; the envpool extra)")
