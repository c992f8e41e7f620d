"""Each agent's deterministic policy as a plain `nn.Module`, for export (`drl export`).

`agent.deterministic_policy()` returns one of these: raw observations [B, ...] in (packed, as
the env backends give them), the actions of `agent.predict(obs, deterministic=True)` out, in
the agent's own convention (discrete actions counted from 0; continuous ones in the env's
bounds for SAC and TD3, the Gaussian's mean for PPO and A2C). Recurrent policies take the
state [B, S, H] before the step and return the state after it. The modules share the agent's
parameters and buffers (no copies): what `runners/export.py` wraps around them (Dict
unpacking, the env's action offsets and bounds) is the same for every algorithm.
"""

from __future__ import annotations

import torch
from torch import nn


class ActorCriticPolicy(nn.Module):
    """PPO, A2C, APPO: the most likely action of the policy head, after the frozen observation
    normaliser (if any)."""

    def __init__(self, net: nn.Module, normalizer: nn.Module | None):
        super().__init__()
        self.net, self.normalizer = net, normalizer

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs if self.normalizer is None else self.normalizer(obs)
        head = self.net.policy_head
        return head.mode(head(self.net.encoder(x)[0]))


class RecurrentActorCriticPolicy(ActorCriticPolicy):
    """Recurrent PPO and A2C: one step from the state before it; the caller zeroes the state
    where an episode starts."""

    def forward(self, obs: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        x = obs if self.normalizer is None else self.normalizer(obs)
        features = self.net.encoder(x)[0].unsqueeze(0)  # [1, B, F]
        starts = torch.zeros(features.shape[:2], dtype=torch.bool, device=features.device)
        out, state = self.net.core(features, state, starts)
        head = self.net.policy_head
        return head.mode(head(out[0])), state


class GreedyQPolicy(nn.Module):
    """The DQN family: the action of the largest value."""

    def __init__(self, q_net: nn.Module):
        super().__init__()
        self.q_net = q_net

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.q_net(obs).argmax(dim=-1)


class RescaledActorPolicy(nn.Module):
    """SAC (the squashed Gaussian's mode) and TD3/DDPG (the actor): an action in [-1, 1]^A,
    rescaled to the env's bounds as `OffPolicyBase.to_env` does."""

    def __init__(self, actor: nn.Module, low: torch.Tensor, high: torch.Tensor):
        super().__init__()
        self.actor = actor
        half_range = 0.5 * (high - low)
        self.register_buffer("center", low + half_range)
        self.register_buffer("half_range", half_range)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        mode = getattr(self.actor, "mode", self.actor)  # SAC's actor has a mode; TD3's is one
        return torch.addcmul(self.center, mode(obs), self.half_range)
