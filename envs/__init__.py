"""Batched environments that speak torch tensors: `envs.make(env_id, num_envs, backend, seed, device)`."""

from envs.make import BACKENDS, EnvError, make, resolve_env_id
from envs.vector import TorchVectorEnv, torch_dtype

__all__ = ["BACKENDS", "EnvError", "TorchVectorEnv", "make", "resolve_env_id", "torch_dtype"]
