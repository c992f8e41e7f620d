"""Torch modules for RL agents: encoders, heads, initialisation and a space-driven builder.

Nothing in this package knows about RL losses or rollouts; agents call networks through
`ActorCritic.act`, `ActorCritic.evaluate` and `ActorCritic.value`.
"""

from networks.actor_critic import ActorCritic
from networks.builder import NetworkConfig, UnsupportedSpaceError, build_actor_critic
from networks.encoders import MLPEncoder
from networks.heads import CategoricalHead, DiagGaussianHead, ValueHead
from networks.init import orthogonal_init

__all__ = [
    "ActorCritic",
    "CategoricalHead",
    "DiagGaussianHead",
    "MLPEncoder",
    "NetworkConfig",
    "UnsupportedSpaceError",
    "ValueHead",
    "build_actor_critic",
    "orthogonal_init",
]
