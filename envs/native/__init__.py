"""Torch-native batched versions of Gymnasium environments (`--backend native`).

They run thousands of envs as tensor programs on CPU or CUDA and agree with Gymnasium
step for step; see `envs/native/base.py` for the vector env they share.
"""

from __future__ import annotations

from typing import Any

import torch

from envs.native.base import NativeVectorEnv
from envs.native.classic_control import Acrobot, CartPole, MountainCar, MountainCarContinuous, Pendulum

NATIVE_ENVS: dict[str, type[NativeVectorEnv]] = {
    cls.gym_id: cls for cls in (Acrobot, CartPole, MountainCar, MountainCarContinuous, Pendulum)
}


def make_native(
    env_id: str, num_envs: int, device: torch.device | str = "cpu", seed: int | None = None, **kwargs: Any
) -> NativeVectorEnv:
    """A native vector env for `env_id`; KeyError if there is none (see NATIVE_ENVS)."""
    return NATIVE_ENVS[env_id](num_envs, device=device, seed=seed, **kwargs)


__all__ = ["NATIVE_ENVS", "NativeVectorEnv", "make_native"]
