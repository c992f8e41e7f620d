"""Networks of off-policy agents: Q-networks (DQN), twin critics and actors (SAC, TD3, DDPG).

Each is built from spaces by `networks.builder`. Continuous actions are in the squashed
range [-1, 1]^A here; agents rescale them to the env's bounds.
"""

from __future__ import annotations

import torch
from torch import nn

from networks.encoders import EnsembleLinear, Linear, MLPEncoder
from networks.heads import SquashedGaussianHead


class QNetwork(nn.Module):
    """Action values of discrete actions: obs [B, ...] -> [B, K], through an encoder and a
    Q-value (or dueling) head."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(obs)[0])


class ContinuousCritic(nn.Module):
    """K independent Q(s, a) networks evaluated together: obs [B, ...], actions [B, A] -> [K, B].

    K=2 are TD3's and SAC's twin critics (one batched matmul per layer for both), K=1 DDPG's.
    """

    def __init__(
        self,
        obs_flattener: nn.Module,
        in_dim: int,
        hidden_sizes: tuple[int, ...],
        activation: str,
        members: int,
        ortho_init: bool = False,
        precision: str = "float32",
    ):
        super().__init__()
        self.members = members
        self.flatten = obs_flattener
        self.trunk = MLPEncoder(in_dim, hidden_sizes, activation, ortho_init, members, precision=precision)
        self.out = EnsembleLinear(members, self.trunk.out_dim, 1, ortho_gain=None)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.flatten(obs), actions], dim=-1)
        return self.out(self.trunk(x)).squeeze(-1)


class SquashedGaussianActor(nn.Module):
    """SAC's actor: obs -> tanh-squashed Gaussian over [-1, 1]^A."""

    def __init__(self, encoder: nn.Module, head: SquashedGaussianHead):
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(obs)[0])

    def sample(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised actions [B, A] in (-1, 1) and their log-probabilities [B]."""
        return self.head.sample(self(obs), generator)

    def squash(self, obs: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`sample` with a given standard normal draw [B, A] instead of a generator's."""
        return self.head.squash(self(obs), noise)

    def sample_action(self, obs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The actions of `sample`, without computing their log-probabilities (exploration)."""
        return self.head.sample_action(self(obs), generator)

    def mode(self, obs: torch.Tensor) -> torch.Tensor:
        return self.head.mode(self(obs))


class DeterministicActor(nn.Module):
    """TD3's and DDPG's actor: obs -> tanh(linear(features)) in [-1, 1]^A."""

    def __init__(self, encoder: nn.Module, features: int, action_dim: int):
        super().__init__()
        self.encoder = encoder
        self.out = Linear(features, action_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.out(self.encoder(obs)[0]))
