"""Build networks from Gymnasium spaces: the one place that maps spaces to modules.

New encoders (CNN for images, recurrent cores) plug in at `build_encoder`; new action
spaces plug in at `build_policy_head`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from networks.actor_critic import ActorCritic
from networks.encoders import MLPEncoder
from networks.heads import CategoricalHead, DiagGaussianHead, ValueHead


class UnsupportedSpaceError(ValueError):
    """A space that no network in this package can read or act in."""


@dataclass
class NetworkConfig:
    """Architecture of the policy and value networks."""

    hidden_sizes: tuple[int, ...] = (64, 64)
    """Widths of the hidden layers of each MLP (actor and critic each get their own)."""
    activation: Literal["tanh", "relu", "elu", "gelu"] = "tanh"
    """Activation function between hidden layers."""
    share_encoder: bool = False
    """Let the actor and the critic share one encoder instead of having one each."""
    ortho_init: bool = True
    """Orthogonal initialisation (gain sqrt(2) hidden, 0.01 policy output, 1 value output)."""
    log_std_init: float = 0.0
    """Initial log standard deviation of Gaussian policies (continuous actions)."""


class OneHot(nn.Module):
    """Encode Discrete observations [B] as one-hot float vectors [B, n]."""

    def __init__(self, n: int, start: int = 0):
        super().__init__()
        self.n, self.start = n, start

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(obs.long().reshape(-1) - self.start, self.n).float()


def observation_dim(space: gym.Space) -> int:
    """Length of the flat vector an MLP sees for one observation from `space`."""
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    raise UnsupportedSpaceError(f"observation space {space} is not supported (supported: Box, Discrete)")


def build_encoder(space: gym.Space, cfg: NetworkConfig, members: int = 1) -> nn.Module:
    """An encoder for observations from `space`: [B, *obs_shape] -> [members, B, features],
    one trunk per member (e.g. 2: one for the actor, one for the critic)."""
    encoder = MLPEncoder(observation_dim(space), cfg.hidden_sizes, cfg.activation, cfg.ortho_init, members)
    if isinstance(space, gym.spaces.Discrete):
        return nn.Sequential(OneHot(int(space.n), int(space.start)), encoder)
    return encoder


def build_policy_head(space: gym.Space, in_dim: int, cfg: NetworkConfig) -> nn.Module:
    """A distribution head acting in `space`."""
    if isinstance(space, gym.spaces.Discrete):
        return CategoricalHead(in_dim, int(space.n), cfg.ortho_init)
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return DiagGaussianHead(in_dim, space.shape[0], cfg.log_std_init, cfg.ortho_init)
    raise UnsupportedSpaceError(f"action space {space} is not supported (supported: Discrete, 1-D Box)")


def build_actor_critic(obs_space: gym.Space, action_space: gym.Space, cfg: NetworkConfig) -> ActorCritic:
    """An actor-critic for these spaces, initialised from torch's global RNG."""
    encoder = build_encoder(obs_space, cfg, members=1 if cfg.share_encoder else 2)
    features = cfg.hidden_sizes[-1]
    policy_head = build_policy_head(action_space, features, cfg)
    value_head = ValueHead(features, cfg.ortho_init)
    return ActorCritic(encoder, policy_head, value_head)
