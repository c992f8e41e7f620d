"""Batched environments that speak torch tensors: `envs.make(env_id, num_envs, backend, seed, device)`.

Every backend satisfies `VectorEnvBackend` (envs/interface.py) and is looked up by name in
the registry (envs/registry.py): `register_backend` adds one, `backend_names()` lists them.
"""

from envs.errors import EnvError, EnvFailure, first_line
from envs.interface import StepInfo, VectorEnvBackend
from envs.make import frame_stack, make, resolve_env_id
from envs.registry import Backend, backend_names, get_backend, register_backend, unregister_backend
from envs.spaces import dict_layout, packing, storage_shape, torch_dtype
from envs.vector import TorchVectorEnv

__all__ = [
    "Backend",
    "EnvError",
    "EnvFailure",
    "StepInfo",
    "TorchVectorEnv",
    "VectorEnvBackend",
    "backend_names",
    "dict_layout",
    "packing",
    "first_line",
    "frame_stack",
    "get_backend",
    "make",
    "register_backend",
    "resolve_env_id",
    "storage_shape",
    "torch_dtype",
    "unregister_backend",
]
