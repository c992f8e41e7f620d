"""The actor-critic module used by on-policy agents (PPO, A2C)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class PolicyOutput(NamedTuple):
    """What the policy returns when acting on a batch of observations."""

    action: torch.Tensor  # [B, *action_shape]
    log_prob: torch.Tensor  # [B]
    value: torch.Tensor  # [B]


class ActorCritic(nn.Module):
    """A policy and a value function over one observation batch.

    The encoder maps observations [B, ...] to features [K, B, F]: the policy head reads
    features[0] and the value head features[-1], so K=1 is a trunk shared by both and
    K=2 gives each its own trunk.
    """

    def __init__(self, encoder: nn.Module, policy_head: nn.Module, value_head: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.policy_head = policy_head
        self.value_head = value_head

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distribution parameters [B, ...] and values [B]."""
        features = self.encoder(obs)
        return self.policy_head(features[0]), self.value_head(features[-1])

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.value_head(self.encoder(obs)[-1])

    def act(
        self, obs: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> PolicyOutput:
        params, value = self(obs)
        head = self.policy_head
        action = head.mode(params) if deterministic else head.sample(params, generator)
        return PolicyOutput(action, head.log_prob(params, action), value)

    def evaluate(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-probabilities [B], entropies [B] and values [B] of `actions` taken at `obs`."""
        params, value = self(obs)
        log_prob, entropy = self.policy_head.log_prob_entropy(params, actions)
        return log_prob, entropy, value
