"""Return estimation: GAE for the on-policy agents, n-step returns for the off-policy ones."""

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


def nstep_returns(
    rewards: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor, gamma: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n-step returns of windows of n consecutive steps of one env each, [B, n] (n >= 1).

    A window is cut after its first episode end: the steps after it belong to the next
    episode. With m the number of steps kept (1 <= m <= n) and L = m - 1 the last one:

      returns   = sum_{k<m} gamma^k r_k
      discounts = gamma^m, or 0 when step L terminated (a terminal state has no future);
                  a truncated step L keeps gamma^m: bootstrap from the state it reached
      last      = L, the step whose next observation the target bootstraps from.

    The target is returns + discounts * V(next_obs[last]). Returns ([B], [B], [B] int64).
    """
    done = terminated | truncated
    ended_before = (done.cumsum(dim=1) - done.long()) > 0  # an episode end at an earlier step of the window
    kept = (~ended_before).to(rewards.dtype)
    n = rewards.shape[1]
    powers = gamma ** torch.arange(n, device=rewards.device, dtype=rewards.dtype)
    returns = (rewards * kept * powers).sum(dim=1)
    steps = kept.sum(dim=1)
    last = steps.long() - 1
    terminal = terminated.gather(1, last.unsqueeze(1)).squeeze(1)
    discounts = torch.where(terminal, 0.0, torch.pow(gamma, steps))
    return returns, discounts, last


def explained_variance(predictions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 - Var[targets - predictions] / Var[targets]: 1 is perfect, 0 no better than a constant."""
    var_targets = targets.var()
    return 1.0 - (targets - predictions).var() / var_targets.clamp_min(1e-12)


def standardize(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / (std + eps), as SB3 and CleanRL normalise advantages."""
    return (x - x.mean()) / (x.std() + eps)
