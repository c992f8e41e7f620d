"""Typed batches passed from the runners to `agent.update`.

Shape names: T time steps of a rollout, N parallel envs, B minibatch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

Metrics = dict[str, float | torch.Tensor]
"""What `update` returns: floats or 0-d tensors left on the device (read once per log)."""


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
    final_obs: torch.Tensor | None = None  # [T, N, *obs_shape] the observation each step reached
    #                                        (before any autoreset): what a learner that re-values
    #                                        states (APPO's V-trace) bootstraps truncations from
    last_obs: torch.Tensor | None = None  # [N, *obs_shape] the observation after the last step


class Transitions(NamedTuple):
    """A minibatch sampled from replay storage (`runners.replay.ReplayBuffer.sample`): the
    target of sample i is rewards[i] + discounts[i] * V(next_obs[i])."""

    obs: torch.Tensor  # [B, *obs_shape]
    actions: torch.Tensor  # [B, *action_shape] as the env received them
    rewards: torch.Tensor  # [B] n-step discounted reward sums
    discounts: torch.Tensor  # [B] gamma^m, 0 where the window ended in a termination
    next_obs: torch.Tensor  # [B, *obs_shape] the observation to bootstrap from
    weights: torch.Tensor  # [B] importance weights (ones for uniform sampling)
    indices: torch.Tensor  # [B] the buffer's slots, for its priority updates


class Progress(NamedTuple):
    """Where training stands: env steps collected so far (summed over envs) out of the budget."""

    step: int
    total_steps: int

    @property
    def fraction(self) -> float:
        """0 at the start, 1 at the budget: what schedules (learning rate, epsilon, ...) read."""
        return min(1.0, self.step / self.total_steps)
