"""Replay storage for off-policy agents, on the training device.

`ReplayBuffer` keeps preallocated, circular, time-major tensors [rows, N, ...]: every
vector-env step writes one row, one transition per env. Each transition keeps
`terminated` and `truncated` apart and the observation the step really reached
(`next_obs`, the final observation where an episode ended), so a time-limit cut
bootstraps and a termination does not.

Observations are kept whole (`WholeObservations`: obs and next_obs, [rows, N, *obs] each) or,
for frame-stacked images such as Atari's [4, 84, 84], one frame at a time (`SharedFrames`, as
Dopamine's and the zoo's memory-optimised buffers do): obs and next_obs of consecutive steps
share three of their four frames, so storing the newest frame of each step's next_obs, plus
the whole first observation of each episode, holds everything, in about a seventh of the
memory (a 1M-transition Atari buffer: about 8.0 GB in place of 56.5 GB). The stacks are rebuilt
when sampled; episode ends are respected, and the final observation of a truncated episode is
kept for its bootstrap. The buffer states its memory need (`nbytes`) and refuses, with a
MemoryError, to allocate more than the device has free.

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
        self.depth = self.levels(size)
        self.first_leaf = 1 << self.depth
        self.tree = torch.zeros(2 * self.first_leaf, dtype=torch.float64, device=device)

    @staticmethod
    def levels(size: int) -> int:
        return max(1, math.ceil(math.log2(size)))

    @staticmethod
    def nbytes(size: int) -> int:
        return 2 * (1 << SumTree.levels(size)) * 8  # float64 nodes

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


def available_memory(device: torch.device) -> int | None:
    """Bytes that can be allocated on `device` now (CPU: MemAvailable of /proc/meminfo), or
    None where this cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


class WholeObservations:
    """obs and next_obs stored as they come: [rows, N, *obs] each."""

    def __init__(self, rows: int, num_envs: int, obs_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device):
        # torch.empty: pages of a large buffer are only touched once written
        self.obs = torch.empty((rows, num_envs, *obs_shape), dtype=dtype, device=device)
        self.next_obs = torch.empty_like(self.obs)

    @staticmethod
    def nbytes(rows: int, num_envs: int, obs_shape: tuple[int, ...], dtype: torch.dtype) -> int:
        return 2 * rows * num_envs * math.prod(obs_shape) * dtype.itemsize

    def add(self, row: int, obs: torch.Tensor, next_obs: torch.Tensor) -> None:
        self.obs[row] = obs
        self.next_obs[row] = next_obs

    def obs_at(self, slot: torch.Tensor) -> torch.Tensor:
        return self.obs.view(-1, *self.obs.shape[2:]).index_select(0, slot)

    def next_obs_at(self, slot: torch.Tensor) -> torch.Tensor:
        return self.next_obs.view(-1, *self.next_obs.shape[2:]).index_select(0, slot)

    def end_episodes(self) -> None:
        pass  # the buffer's truncated flags mark it

    def state_dict(self, filled: int) -> dict[str, Any]:
        return {"obs": self.obs[:filled].cpu(), "next_obs": self.next_obs[:filled].cpu()}

    def load_state_dict(self, state: dict[str, Any], filled: int) -> None:
        self.obs[:filled].copy_(state["obs"])
        self.next_obs[:filled].copy_(state["next_obs"])


class SharedFrames:
    """Frame stacks [k, *frame] (newest frame last) stored one frame at a time.

    Each env has a circular stream of `length` frames. A step appends the newest frame of
    its next_obs; a step that begins an episode (the first, and each after an episode end)
    first appends its obs's k frames, since after a reset obs does not continue the stack.
    A transition keeps the stream position of its next_obs's newest frame (`newest`, counted
    from the stream's start, never wrapped): its next_obs is frames newest-k+1..newest and
    its obs frames newest-k..newest-1. Steps that begin episodes use k + 1 frames, so the
    stream holds rows + rows // 8 frames and more: where episodes are shorter than about 8k
    steps on average, the oldest transitions lose frames before their rows are overwritten;
    `add` returns those slots, which the buffer then never samples.
    """

    def __init__(
        self,
        rows: int,
        num_envs: int,
        obs_shape: tuple[int, ...],
        dtype: torch.dtype,
        device: torch.device,
        n_step: int,
    ):
        self.k, self.num_envs = obs_shape[0], num_envs
        self.length = self.stream_length(rows, obs_shape[0], n_step)
        # one more frame per env: the writes a step does not need (obs frames of envs that do
        # not begin an episode) go there
        self.frames = torch.empty((num_envs, self.length + 1, *obs_shape[1:]), dtype=dtype, device=device)
        self.newest = torch.zeros((rows, num_envs), dtype=torch.int64, device=device)
        self.owner = torch.full((num_envs, self.length), -1, dtype=torch.int64, device=device)  # a position's row
        self.head = torch.zeros(num_envs, dtype=torch.int64, device=device)  # the position the next frame takes
        self.starts = torch.ones(num_envs, dtype=torch.bool, device=device)  # the next step begins an episode
        self._env = torch.arange(num_envs, device=device)
        self._base = self._env * (self.length + 1)  # where each env's stream starts in frames.view(-1, ...)
        self._stack = torch.arange(self.k, device=device)
        self._reach = torch.arange(2 * self.k + 1, device=device)

    @staticmethod
    def stream_length(rows: int, k: int, n_step: int) -> int:
        # the frames of the n newest rows (whose windows are being completed) are never overwritten
        return rows + rows // 8 + (n_step + 1) * (k + 1)

    @classmethod
    def nbytes(cls, rows: int, num_envs: int, obs_shape: tuple[int, ...], dtype: torch.dtype, n_step: int) -> int:
        length = cls.stream_length(rows, obs_shape[0], n_step)
        frames = num_envs * (length + 1) * math.prod(obs_shape[1:]) * dtype.itemsize
        return frames + 8 * num_envs * (rows + length)

    def add(self, row: int, obs: torch.Tensor, next_obs: torch.Tensor, ended: torch.Tensor) -> torch.Tensor:
        """Append one step of every env ([N, k, *frame] each; `ended`: the step ended its
        episode). Returns, for each of [N, 2k + 1] stream positions about to be overwritten,
        the flat slot of a transition that loses a frame, or -1."""
        k, length, env = self.k, self.length, self._env
        starts, head = self.starts, self.head
        # positions head .. head + m - 1 are overwritten (m = k + 1 where an episode begins,
        # else 1); they held head - length + j, frames of the transitions whose newest
        # position is in head - length + [0, m - 1 + k]
        first = k * starts.long()  # where an episode begins, its obs's k frames come first
        count = 1 + first
        old = head.unsqueeze(1) - length + self._reach
        rows = self.owner.gather(1, old.remainder(length))
        live = (self._reach < (count + k).unsqueeze(1)) & (old >= 0) & (rows >= 0)
        live &= self.newest[rows.clamp(min=0), env.unsqueeze(1)] == old
        lost = torch.where(live, rows * self.num_envs + env.unsqueeze(1), -1)

        frames = self.frames.view(-1, *self.frames.shape[2:])  # [N * (length + 1), *frame]
        spare = torch.full_like(head, length).unsqueeze(1)
        at = torch.where(starts.unsqueeze(1), (head.unsqueeze(1) + self._stack).remainder(length), spare)
        obs, next_obs = obs.to(frames.dtype), next_obs.to(frames.dtype)
        frames.index_copy_(0, (self._base.unsqueeze(1) + at).view(-1), obs.reshape(-1, *obs.shape[2:]))
        newest = head + first
        at_newest = newest.remainder(length)
        frames.index_copy_(0, self._base + at_newest, next_obs[:, -1])
        self.newest[row] = newest
        self.owner[env, at_newest] = row
        self.head = newest + 1
        self.starts = ended.clone()
        return lost

    def _stacks(self, slot: torch.Tensor, shift: int) -> torch.Tensor:
        base = (slot % self.num_envs).mul_(self.length + 1)
        newest = self.newest.view(-1).index_select(0, slot)
        at = (newest.unsqueeze(1) - self.k + shift + self._stack).remainder_(self.length).add_(base.unsqueeze(1))
        frames = self.frames.view(-1, *self.frames.shape[2:]).index_select(0, at.view(-1))
        return frames.view(len(slot), self.k, *frames.shape[1:])

    def obs_at(self, slot: torch.Tensor) -> torch.Tensor:
        return self._stacks(slot, 0)

    def next_obs_at(self, slot: torch.Tensor) -> torch.Tensor:
        return self._stacks(slot, 1)

    def end_episodes(self) -> None:
        """The envs were reset (not stepped): the next step of each begins an episode."""
        self.starts.fill_(True)

    def state_dict(self, filled: int) -> dict[str, Any]:
        """The stream positions written so far (every one, once a stream has wrapped) and the
        filled rows: a checkpoint of a young buffer is as small as what it holds."""
        written = min(int(self.head.max()), self.length)
        return {
            "frames_shared": True,
            "frames": self.frames[:, :written].cpu(),
            "owner": self.owner[:, :written].cpu(),
            "newest": self.newest[:filled].cpu(),
            "head": self.head.cpu(),
            "starts": self.starts.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any], filled: int) -> None:
        if not state.get("frames_shared"):
            raise ValueError("the saved replay buffer stores whole observations; resume with --no-share-frames")
        # (checkpoints written before the state held only the written part hold whole tensors)
        for name in ("frames", "owner"):
            saved = state[name]
            getattr(self, name)[:, : saved.shape[1]].copy_(saved)
        self.newest[: state["newest"].shape[0]].copy_(state["newest"])
        self.head.copy_(state["head"])
        self.starts.copy_(state["starts"])


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
        share_frames: bool = False,
    ):
        self.device = torch.device(device)
        self.num_envs, self.n_step, self.gamma = num_envs, n_step, gamma
        self.rows = max(math.ceil(capacity / num_envs), n_step + 1)
        shape = (self.rows, num_envs)
        obs_shape = storage_shape(observation_space)
        if share_frames and len(obs_shape) < 2:
            raise ValueError(f"frames are shared between stacked image observations, not of shape {obs_shape}")
        self.nbytes = self.memory_need(
            self.rows, num_envs, obs_shape, obs_dtype, action_space, n_step, share_frames, prioritized
        )
        available = available_memory(self.device)
        if available is not None and self.nbytes > available:
            raise MemoryError(f"it needs {self.nbytes / 1e9:.1f} GB and {available / 1e9:.1f} GB are free")
        self.observations: WholeObservations | SharedFrames
        if share_frames:
            self.observations = SharedFrames(self.rows, num_envs, obs_shape, obs_dtype, self.device, n_step)
        else:
            self.observations = WholeObservations(self.rows, num_envs, obs_shape, obs_dtype, self.device)
        action_dtype = torch_dtype(action_space)
        self.actions = torch.empty((*shape, *action_space.shape), dtype=action_dtype, device=self.device)
        self.rewards = torch.empty(shape, dtype=torch.float32, device=self.device)
        self.terminated = torch.empty(shape, dtype=torch.bool, device=self.device)
        self.truncated = torch.empty(shape, dtype=torch.bool, device=self.device)
        self.pos = 0  # the row the next add writes
        self.filled = 0  # rows written so far, at most self.rows
        self.alpha, self.priority_eps = alpha, priority_eps
        self.prioritized = prioritized
        self.tree: SumTree | None = None
        self.max_priority = torch.ones((), dtype=torch.float64, device=self.device)
        if prioritized or share_frames:
            # shared frames sample uniformly through the tree too (all priorities 1), so that the
            # transitions that lost a frame (priority 0) are never drawn; one more leaf, always
            # 0, takes the writes meant for no transition
            self.tree = SumTree(self.rows * num_envs + int(share_frames), self.device)
        self._env_index = torch.arange(num_envs, device=self.device)
        self._window = torch.arange(n_step, device=self.device)
        self._ones: torch.Tensor | None = None  # the importance weights of uniform sampling

    @staticmethod
    def memory_need(
        rows: int,
        num_envs: int,
        obs_shape: tuple[int, ...],
        obs_dtype: torch.dtype,
        action_space: gym.Space,
        n_step: int,
        share_frames: bool,
        prioritized: bool = False,
    ) -> int:
        """Bytes a buffer of `rows` steps of `num_envs` envs allocates."""
        slots = rows * num_envs
        if share_frames:
            observations = SharedFrames.nbytes(rows, num_envs, obs_shape, obs_dtype, n_step)
        else:
            observations = WholeObservations.nbytes(rows, num_envs, obs_shape, obs_dtype)
        actions = slots * math.prod(action_space.shape) * torch_dtype(action_space).itemsize
        tree = 0
        if prioritized or share_frames:
            tree = SumTree.nbytes(slots + int(share_frames))
        return observations + actions + slots * (4 + 1 + 1) + tree

    def describe(self) -> str:
        """E.g. '100,000 transitions, 0.8 GB, frames shared'."""
        shared = ", frames shared" if isinstance(self.observations, SharedFrames) else ""
        return f"{self.capacity:,} transitions, {self.nbytes / 1e9:.1f} GB{shared}"

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
        if isinstance(self.observations, SharedFrames):
            lost = self.observations.add(row, obs, next_obs, terminated | truncated).view(-1)
            self.tree.set(torch.where(lost >= 0, lost, self.tree.size - 1), torch.zeros_like(lost, dtype=torch.float64))
        else:
            self.observations.add(row, obs, next_obs)
        self.actions[row] = actions
        self.rewards[row] = rewards
        self.terminated[row] = terminated
        self.truncated[row] = truncated
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
        self.observations.end_episodes()

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
            weights = self._uniform_weights(batch_size)
        elif not self.prioritized:  # shared frames: uniform over the transitions that have all theirs
            u = torch.rand(batch_size, device=self.device, dtype=torch.float64, generator=generator)
            slot = self.tree.find(u * self.tree.total)
            weights = self._uniform_weights(batch_size)
        else:
            u = torch.rand(batch_size, device=self.device, dtype=torch.float64, generator=generator)
            strata = torch.arange(batch_size, device=self.device, dtype=torch.float64)
            slot = self.tree.find((strata + u) / batch_size * self.tree.total)
            probs = self.tree.leaves(slot) / self.tree.total
            weights = (count * probs).pow(-beta)
            weights = (weights / weights.max()).float()
        return self.transitions(slot, weights)

    def _uniform_weights(self, batch_size: int) -> torch.Tensor:
        if self._ones is None or len(self._ones) != batch_size:
            self._ones = torch.ones(batch_size, device=self.device)
        return self._ones

    def transitions(self, slot: torch.Tensor, weights: torch.Tensor | None = None) -> Transitions:
        """The transitions at flat slots `slot` (row * num_envs + env) [B], with their n-step
        returns; `weights` default to ones."""
        N = self.num_envs
        if weights is None:
            weights = self._uniform_weights(len(slot))

        def take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            return x.view(-1, *x.shape[2:]).index_select(0, index)

        obs = self.observations.obs_at(slot)
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
        next_obs = self.observations.next_obs_at(next_slot)
        return Transitions(obs, actions, rewards, discounts, next_obs, weights, slot)

    def update_priorities(self, indices: torch.Tensor, td_errors: torch.Tensor) -> None:
        """Set the priorities of sampled slots to (|TD error| + eps)^alpha."""
        if not self.prioritized:
            return
        priorities = (td_errors.detach().abs().double() + self.priority_eps).pow(self.alpha)
        # a slot that left the distribution since it was sampled (overwritten, or its frames
        # were) stays out
        priorities = torch.where(self.tree.leaves(indices) > 0, priorities, 0.0)
        self.tree.set(indices, priorities)
        self.max_priority = torch.maximum(self.max_priority, priorities.max())

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """The written rows and counters (and priorities): what a resumed run needs."""
        n = self.filled
        state: dict[str, Any] = {"pos": self.pos, "filled": n, "rows": self.rows, "num_envs": self.num_envs}
        state.update(self.observations.state_dict(n))
        for name in ("actions", "rewards", "terminated", "truncated"):
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
        if isinstance(self.observations, WholeObservations) and state.get("frames_shared"):
            raise ValueError("the saved replay buffer shares frames; resume with --share-frames")
        self.observations.load_state_dict(state, n)
        for name in ("actions", "rewards", "terminated", "truncated"):
            getattr(self, name)[:n].copy_(state[name])  # (copy_ moves it to this buffer's device)
        self.pos, self.filled = int(state["pos"]), n
        if self.tree is not None:
            if "tree" not in state:
                raise ValueError("the saved replay buffer has no priorities; resume with the same --prioritized")
            self.tree.load_state_dict(state["tree"])
            self.max_priority.copy_(state["max_priority"])
