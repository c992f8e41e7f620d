"""Build networks from Gymnasium spaces: the one place that maps spaces to modules.

New encoders (CNN for images, recurrent cores) plug in at `build_encoder`; new action
spaces plug in at `build_policy_head`. Off-policy networks (Q-networks, critics, actors)
are built at the end of the module from the same pieces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from networks.actor_critic import ActorCritic
from networks.encoders import ACTIVATIONS, MLPEncoder
from networks.heads import CategoricalHead, DiagGaussianHead, DuelingHead, QHead, SquashedGaussianHead, ValueHead
from networks.off_policy import ContinuousCritic, DeterministicActor, QNetwork, SquashedGaussianActor


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


# ------------------------------------------------------------------ off-policy networks
def _flattener(space: gym.Space) -> nn.Module:
    if isinstance(space, gym.spaces.Discrete):
        return OneHot(int(space.n), int(space.start))
    observation_dim(space)  # raises for unsupported spaces
    return nn.Flatten()


def _continuous_action_dim(space: gym.Space) -> int:
    if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
        raise UnsupportedSpaceError(f"action space {space} is not supported (supported: 1-D Box)")
    if not (np.isfinite(space.low).all() and np.isfinite(space.high).all()):
        raise UnsupportedSpaceError(f"action space {space} needs finite bounds to rescale actions into")
    return int(space.shape[0])


def build_q_network(
    obs_space: gym.Space, action_space: gym.Space, cfg: NetworkConfig, dueling: bool = False
) -> QNetwork:
    """A Q-network for discrete actions; with `dueling` the last hidden layer is split into
    value and advantage streams of the same width."""
    if not isinstance(action_space, gym.spaces.Discrete):
        raise UnsupportedSpaceError(f"action space {action_space} is not supported (supported: Discrete)")
    n = int(action_space.n)
    if dueling:
        trunk = NetworkConfig(**{**cfg.__dict__, "hidden_sizes": cfg.hidden_sizes[:-1]})
        encoder = build_encoder(obs_space, trunk)  # no hidden layers left: the flat observation
        in_dim = trunk.hidden_sizes[-1] if trunk.hidden_sizes else observation_dim(obs_space)
        head: nn.Module = DuelingHead(in_dim, n, cfg.hidden_sizes[-1], ACTIVATIONS[cfg.activation])
        return QNetwork(encoder, head)
    return QNetwork(build_encoder(obs_space, cfg), QHead(cfg.hidden_sizes[-1], n))


def build_critic(
    obs_space: gym.Space, action_space: gym.Space, cfg: NetworkConfig, members: int = 2
) -> ContinuousCritic:
    """`members` Q(s, a) networks for 1-D Box actions, evaluated as one ensemble."""
    action_dim = _continuous_action_dim(action_space)
    in_dim = observation_dim(obs_space) + action_dim
    return ContinuousCritic(_flattener(obs_space), in_dim, cfg.hidden_sizes, cfg.activation, members, cfg.ortho_init)


def build_actor(
    obs_space: gym.Space, action_space: gym.Space, cfg: NetworkConfig, squashed_gaussian: bool
) -> SquashedGaussianActor | DeterministicActor:
    """SAC's stochastic actor (`squashed_gaussian`) or TD3's deterministic one, acting in [-1, 1]^A."""
    action_dim = _continuous_action_dim(action_space)
    encoder = build_encoder(obs_space, cfg)
    if squashed_gaussian:
        return SquashedGaussianActor(encoder, SquashedGaussianHead(cfg.hidden_sizes[-1], action_dim))
    return DeterministicActor(encoder, cfg.hidden_sizes[-1], action_dim)
