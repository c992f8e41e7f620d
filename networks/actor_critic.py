"""The actor-critic modules used by on-policy agents (PPO, A2C): feed-forward and recurrent."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class PolicyOutput(NamedTuple):
    """What the policy returns when acting on a batch of observations."""

    action: torch.Tensor  # [B, *action_shape]
    log_prob: torch.Tensor  # [B]
    value: torch.Tensor  # [B]
    state: torch.Tensor | None = None  # [B, S, H] recurrent state after this step (recurrent nets)


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


class RecurrentActorCritic(nn.Module):
    """Encoder, recurrent core (`networks.recurrent`), then a policy and a value head, all
    shared up to the heads. Every call takes the state before its first step [B, S, H] and
    the episode starts [L, B] (or [B] for one step), where the state is zeroed."""

    def __init__(self, encoder: nn.Module, core: nn.Module, policy_head: nn.Module, value_head: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.core = core
        self.policy_head = policy_head
        self.value_head = value_head

    def initial_state(self, batch: int, device: torch.device | str) -> torch.Tensor:
        return self.core.initial_state(batch, device)

    def _features(
        self, obs: torch.Tensor, state: torch.Tensor, starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Core outputs [L*B, H] for observations [L, B, ...], and the state after step L."""
        L, B = starts.shape
        x = self.encoder(obs.flatten(0, 1))[0].view(L, B, -1)
        out, state = self.core(x, state, starts)
        return out.flatten(0, 1), state

    def act(
        self,
        obs: torch.Tensor,
        state: torch.Tensor,
        starts: torch.Tensor,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> PolicyOutput:
        """One step for observations [B, ...]."""
        features, state = self._features(obs.unsqueeze(0), state, starts.unsqueeze(0))
        params, value = self.policy_head(features), self.value_head(features)
        head = self.policy_head
        action = head.mode(params) if deterministic else head.sample(params, generator)
        return PolicyOutput(action, head.log_prob(params, action), value, state)

    def value(self, obs: torch.Tensor, state: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """Values [B] of one step's observations [B, ...]."""
        features, _ = self._features(obs.unsqueeze(0), state, starts.unsqueeze(0))
        return self.value_head(features)

    def evaluate(
        self, obs: torch.Tensor, actions: torch.Tensor, state: torch.Tensor, starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-probabilities, entropies and values [L*B] of sequences: observations
        [L, B, ...] and actions [L, B, ...] from the state before step 0 [B, S, H]."""
        features, _ = self._features(obs, state, starts)
        params = self.policy_head(features)
        log_prob, entropy = self.policy_head.log_prob_entropy(params, actions.flatten(0, 1))
        return log_prob, entropy, self.value_head(features)
