"""Replay storage for off-policy agents, on the training device.

`ReplayBuffer` keeps preallocated, circular, time-major tensors [rows, N, ...]: every
vector-env step writes one row, one transition per env. Each transition keeps
`terminated` and `truncated` apart and the observation the step really reached
(`next_obs`, the final observation where an episode ended), so a time-limit cut
bootstraps and a termination does not.

Sampling is uniform or prioritised (Schaul et al. 2016: a sum-tree over all slots,
importance weights, priorities from TD errors). With n_step > 1 a sampled transition
starts an n-step window along its env's column, cut at the first episode end (see
`agents.advantages.nstep_returns`); the newest n - 1 rows are not sampled until their
windows are complete. Counters live on the host, data and priorities on the device:
adding and sampling never read a device value.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import torch

from agents.advantages import nstep_returns
from agents.batch import Transitions
from envs import storage_shape, torch_dtype


class SumTree:
    """A binary tree of sums over `size` non-negative leaves, as one float64 tensor.

    `set` and `find` work on whole batches of leaves at once, one tensor operation per
    tree level (about log2(size) levels), with no loop over the batch.
    """

    def __init__(self, size: int, device: torch.device):
        self.size = size
        self.depth = max(1, math.ceil(math.log2(size)))
        self.first_leaf = 1 << self.depth
        self.tree = torch.zeros(2 * self.first_leaf, dtype=torch.float64, device=device)

    @property
    def total(self) -> torch.Tensor:
        return self.tree[1]

    def leaves(self, index: torch.Tensor) -> torch.Tensor:
        return self.tree[index + self.first_leaf]

    def set(self, index: torch.Tensor, values: torch.Tensor) -> None:
        """Set leaves `index` [K] to `values` [K] and recompute their ancestors."""
        node = index + self.first_leaf
        self.tree[node] = values.to(torch.float64)
        for _ in range(self.depth):
            node = node // 2
            self.tree[node] = self.tree[2 * node] + self.tree[2 * node + 1]

    def find(self, mass: torch.Tensor) -> torch.Tensor:
        """For each mass in [0, total), the leaf whose prefix-sum interval holds it. Never
        descends into a zero-sum subtree, so a leaf of priority 0 is never returned."""
        node = torch.ones_like(mass, dtype=torch.int64)
        for _ in range(self.depth):
            left = self.tree[2 * node]
            right_sum = self.tree[2 * node + 1]
            go_right = ((mass >= left) & (right_sum > 0)) | (left <= 0)
            mass = torch.where(go_right, mass - left, mass)
            node = 2 * node + go_right.long()
        return node - self.first_leaf

    def state_dict(self) -> dict[str, Any]:
        return {"tree": self.tree.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tree.copy_(state["tree"])


class ReplayBuffer:
    """Circular replay storage for `capacity` transitions from `num_envs` envs; see the module docstring."""

    def __init__(
        self,
        capacity: int,
        num_envs: int,
        observation_space: gym.Space,
        action_space: gym.Space,
        device: torch.device | str,
        obs_dtype: torch.dtype = torch.float32,
        n_step: int = 1,
        gamma: float = 0.99,
        prioritized: bool = False,
        alpha: float = 0.6,
        priority_eps: float = 1e-6,
    ):
        self.device = torch.device(device)
        self.num_envs, self.n_step, self.gamma = num_envs, n_step, gamma
        self.rows = max(math.ceil(capacity / num_envs), n_step + 1)
        shape = (self.rows, num_envs)
        # torch.empty: pages of a large buffer are only touched once written
        self.obs = torch.empty((*shape, *storage_shape(observation_space)), dtype=obs_dtype, device=self.device)
        self.next_obs = torch.empty_like(self.obs)
        action_dtype = torch_dtype(action_space)
        self.actions = torch.empty((*shape, *action_space.shape), dtype=action_dtype, device=self.device)
        self.rewards = torch.empty(shape, dtype=torch.float32, device=self.device)
        self.terminated = torch.empty(shape, dtype=torch.bool, device=self.device)
        self.truncated = torch.empty(shape, dtype=torch.bool, device=self.device)
        self.pos = 0  # the row the next add writes
        self.filled = 0  # rows written so far, at most self.rows
        self.alpha, self.priority_eps = alpha, priority_eps
        self.tree: SumTree | None = None
        if prioritized:
            self.tree = SumTree(self.rows * num_envs, self.device)
            self.max_priority = torch.ones((), dtype=torch.float64, device=self.device)
        self._env_index = torch.arange(num_envs, device=self.device)
        self._window = torch.arange(n_step, device=self.device)
        self._ones: torch.Tensor | None = None  # the importance weights of uniform sampling

    @property
    def capacity(self) -> int:
        return self.rows * self.num_envs

    def __len__(self) -> int:
        """Transitions that can be sampled now (whole n-step windows)."""
        return max(0, self.filled - self.n_step + 1) * self.num_envs

    def add(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        rewards: torch.Tensor,
        terminated: torch.Tensor,
        truncated: torch.Tensor,
        next_obs: torch.Tensor,
    ) -> None:
        """Store one vector-env step: [N, ...] tensors; `next_obs` is the observation each env
        reached (the final one where an episode ended, before any reset)."""
        row = self.pos
        self.obs[row] = obs
        self.actions[row] = actions
        self.rewards[row] = rewards
        self.terminated[row] = terminated
        self.truncated[row] = truncated
        self.next_obs[row] = next_obs
        self.pos = (row + 1) % self.rows
        self.filled = min(self.filled + 1, self.rows)
        if self.tree is not None:
            # the overwritten slots leave the distribution; the row whose n-step window this
            # step completes enters it at the highest priority seen so far
            if self.n_step > 1:
                self.tree.set(self._slots(row), torch.zeros(self.num_envs, device=self.device))
            if self.filled >= self.n_step:
                complete = (row - self.n_step + 1) % self.rows
                self.tree.set(self._slots(complete), self.max_priority.expand(self.num_envs))

    def mark_episode_break(self) -> None:
        """Mark the newest row truncated: the envs were reset after it (a resume without env
        state), so n-step windows must not run on into the new episodes."""
        if self.filled:
            self.truncated[(self.pos - 1) % self.rows] = True

    def _slots(self, row: int) -> torch.Tensor:
        return row * self.num_envs + self._env_index

    def sample(self, batch_size: int, generator: torch.Generator | None = None, beta: float = 0.4) -> Transitions:
        """A batch of transitions; prioritised buffers weight them by (len * P(i))^-beta / max."""
        count = len(self)
        if count == 0:
            raise ValueError("the replay buffer holds no complete transition yet")
        N = self.num_envs
        if self.tree is None:
            # complete transitions fill the flat slots from the oldest row's on, circularly
            slot = torch.randint(0, count, (batch_size,), device=self.device, generator=generator)
            oldest = (self.pos - self.filled) % self.rows
            if oldest:
                slot = slot.add_(oldest * N).remainder_(self.rows * N)
            if self._ones is None or len(self._ones) != batch_size:
                self._ones = torch.ones(batch_size, device=self.device)
            weights = self._ones
        else:
            u = torch.rand(batch_size, device=self.device, dtype=torch.float64, generator=generator)
            strata = torch.arange(batch_size, device=self.device, dtype=torch.float64)
            slot = self.tree.find((strata + u) / batch_size * self.tree.total)
            probs = self.tree.leaves(slot) / self.tree.total
            weights = (count * probs).pow(-beta)
            weights = (weights / weights.max()).float()

        def take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            return x.view(-1, *x.shape[2:]).index_select(0, index)

        obs = take(self.obs, slot)
        actions = take(self.actions, slot)
        if self.n_step == 1:
            rewards = take(self.rewards, slot)
            discounts = torch.where(take(self.terminated, slot), 0.0, self.gamma)
            next_slot = slot
        else:
            window = (slot // N).unsqueeze(1) + self._window  # rows [B, n]
            window = window.remainder_(self.rows).mul_(N).add_((slot % N).unsqueeze(1))  # flat slots
            flat_window = window.view(-1)
            rewards, discounts, last = nstep_returns(
                take(self.rewards, flat_window).view(window.shape),
                take(self.terminated, flat_window).view(window.shape),
                take(self.truncated, flat_window).view(window.shape),
                self.gamma,
            )
            next_slot = window.gather(1, last.unsqueeze(1)).squeeze(1)
        next_obs = take(self.next_obs, next_slot)
        return Transitions(obs, actions, rewards, discounts, next_obs, weights, slot)

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        """Set the priorities of sampled slots to (|TD error| + eps)^alpha."""
        if self.tree is None:
            return
        priorities = (td_errors.detach().abs().double() + self.priority_eps).pow(self.alpha)
        self.tree.set(indices, priorities)
        self.max_priority = torch.maximum(self.max_priority, priorities.max())

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The written rows and counters (and priorities): what a resumed run needs."""
        n = self.filled
        state: dict[str, Any] = {"pos": self.pos, "filled": n, "rows": self.rows, "num_envs": self.num_envs}
        for name in ("obs", "next_obs", "actions", "rewards", "terminated", "truncated"):
            state[name] = getattr(self, name)[:n].cpu()  # a copy (also on the CPU), not a view
        if self.tree is not None:
            state["tree"] = self.tree.state_dict()
            state["max_priority"] = self.max_priority.cpu()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state["rows"], state["num_envs"]) != (self.rows, self.num_envs):
            raise ValueError(
                f"the saved replay buffer has {state['rows']} rows x {state['num_envs']} envs, "
                f"this one {self.rows} x {self.num_envs}; keep buffer_size and num_envs when resuming"
            )
        n = int(state["filled"])
        for name in ("obs", "next_obs", "actions", "rewards", "terminated", "truncated"):
            getattr(self, name)[:n].copy_(state[name])  # (copy_ moves it to this buffer's device)
        self.pos, self.filled = int(state["pos"]), n
        if self.tree is not None:
            if "tree" not in state:
                raise ValueError("the saved replay buffer has no priorities; resume with the same --prioritized")
            self.tree.load_state_dict(state["tree"])
            self.max_priority.copy_(state["max_priority"])
