"""Advantage estimation shared by the on-policy agents."""

from __future__ import annotations

import torch


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and value targets (Schulman et al. 2016).

    All inputs are time-major [T, N]. `next_values[t]` is the value of the state step t
    reached: for a truncated step that is the true final observation, so the estimate
    bootstraps through time limits; for a terminated step it is ignored, since a terminal
    state has no future. Either kind of episode end stops the advantage from flowing back
    into the previous episode. With `gae_lambda=1` this gives n-step returns bootstrapped
    at the end of the segment (A2C).

    Returns (advantages, returns), both [T, N], with returns = advantages + values.
    """
    not_terminated = (~terminated).to(values.dtype)
    not_done = (~(terminated | truncated)).to(values.dtype)
    deltas = rewards + gamma * not_terminated * next_values - values
    decay = (gamma * gae_lambda) * not_done
    advantages = torch.empty_like(deltas)
    running = torch.zeros_like(deltas[0])
    for t in range(deltas.shape[0] - 1, -1, -1):
        running = deltas[t] + decay[t] * running
        advantages[t] = running
    return advantages, advantages + values


def explained_variance(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 - Var[targets - predictions] / Var[targets]: 1 is perfect, 0 no better than a constant."""
    var_targets = targets.var()
    return 1.0 - (targets - predictions).var() / var_targets.clamp_min(1e-12)


def standardize(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / (std + eps), as SB3 and CleanRL normalise advantages."""
    return (x - x.mean()) / (x.std() + eps)
