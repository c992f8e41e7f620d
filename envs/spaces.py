"""How observations and actions of each Gymnasium space are held as tensors.

Box and Discrete values are tensors of their own shape. A Dict observation travels as one
flat tensor: its keys in the space's order, each flattened (a Discrete value as one
number), so rollout and replay storage stay single tensors; `dict_layout` tells encoders
where each key lies. The packed dtype is uint8 when every key is uint8 (images), float32
otherwise.
"""

from __future__ import annotations

from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch

from envs.errors import EnvError


class DictEntry(NamedTuple):
    """Where one key of a Dict observation lies in the packed vector."""

    key: str
    space: gym.Space
    start: int
    end: int


def dict_layout(space: gym.spaces.Dict) -> list[DictEntry]:
    """The keys of a Dict space in packing order, with their slices of the packed vector."""
    entries, start = [], 0
    for key, sub in space.spaces.items():
        if isinstance(sub, gym.spaces.Box):
            size = int(np.prod(sub.shape))
        elif isinstance(sub, gym.spaces.Discrete):
            size = 1
        else:
            raise EnvError(f"Dict observation key {key!r} has space {sub}; supported: Box, Discrete")
        entries.append(DictEntry(key, sub, start, start + size))
        start += size
    return entries


def packing(space: gym.Space) -> list[DictEntry] | None:
    """The layout of `space`'s packed form for the networks: `dict_layout` for a Dict, none else."""
    return dict_layout(space) if isinstance(space, gym.spaces.Dict) else None


def torch_dtype(space: gym.Space) -> torch.dtype:
    """The tensor dtype used for values of `space`: float32 for float boxes, int64 for
    discrete values, the box's own dtype otherwise (uint8 images stay uint8), and for a
    Dict the dtype of its packed form."""
    if isinstance(space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete)):
        return torch.int64
    if isinstance(space, gym.spaces.Box):
        if np.issubdtype(space.dtype, np.floating):
            return torch.float32
        return torch.from_numpy(np.zeros((), dtype=space.dtype)).dtype
    if isinstance(space, gym.spaces.Dict):
        entries = dict_layout(space)
        all_uint8 = all(isinstance(e.space, gym.spaces.Box) and e.space.dtype == np.uint8 for e in entries)
        return torch.uint8 if all_uint8 else torch.float32
    raise TypeError(f"no tensor dtype for space {space}")


def storage_shape(space: gym.Space) -> tuple[int, ...]:
    """The shape of one value of `space` as stored: its own shape, or (packed length,) for a Dict."""
    if isinstance(space, gym.spaces.Dict):
        return (dict_layout(space)[-1].end,)
    return tuple(space.shape)


def pack_obs(space: gym.Space, obs: object) -> np.ndarray:
    """A batch of observations [N, ...] as one array; Dict batches are packed (see the module docstring)."""
    if not isinstance(space, gym.spaces.Dict):
        return np.asarray(obs)
    dtype = np.uint8 if torch_dtype(space) == torch.uint8 else np.float32
    parts = [np.asarray(obs[e.key]).reshape(len(obs[e.key]), -1).astype(dtype, copy=False) for e in dict_layout(space)]
    return np.concatenate(parts, axis=1)


def host_tensor(array: object, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A host array as a tensor of `dtype` on `device`; on the CPU in that dtype already, the
    array's own memory (no copy)."""
    return torch.from_numpy(np.ascontiguousarray(array)).to(device, dtype)
