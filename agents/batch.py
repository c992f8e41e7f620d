"""Typed batches passed from the runners to `agent.update`.

Shape names: T time steps of a rollout, N parallel envs, B minibatch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class Rollout(NamedTuple):
    """A time-major on-policy segment collected by `runners.rollout.OnPolicyCollector`."""

    obs: torch.Tensor  # [T, N, *obs_shape] raw observations the policy acted on
    actions: torch.Tensor  # [T, N, *action_shape] sampled actions (before any clipping to bounds)
    log_probs: torch.Tensor  # [T, N] log pi(action | obs) at collection time
    values: torch.Tensor  # [T, N] V(obs) at collection time
    rewards: torch.Tensor  # [T, N] raw environment rewards
    terminated: torch.Tensor  # [T, N] bool: the episode ended in a terminal state (no bootstrap)
    truncated: torch.Tensor  # [T, N] bool: the episode was cut short, e.g. by a time limit (bootstrap)
    next_values: torch.Tensor  # [T, N] V(s') of the state each step reached: the true final
    #                            observation where the episode was truncated, obs[t + 1] otherwise
    states: torch.Tensor | None = None  # [T, N, S, H] recurrent state before each step (before resets)
    starts: torch.Tensor | None = None  # [T, N] bool: the step begins an episode (state zeroed first)
