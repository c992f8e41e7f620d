"""Batched environments that speak torch tensors: `envs.make(env_id, num_envs, backend, seed, device)`."""

from envs.make import BACKENDS, EnvError, make, resolve_env_id
from envs.spaces import dict_layout, storage_shape, torch_dtype
from envs.vector import TorchVectorEnv

__all__ = [
    "BACKENDS",
    "EnvError",
    "TorchVectorEnv",
    "dict_layout",
    "make",
    "resolve_env_id",
    "storage_shape",
    "torch_dtype",
]
