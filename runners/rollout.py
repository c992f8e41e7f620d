"""On-policy rollout collection into preallocated time-major storage on the device."""

from __future__ import annotations

import time
from typing import Any

import torch

from agents import OnPolicyAgent, Progress, Rollout
from envs import VectorEnvBackend, storage_shape, torch_dtype
from runners.guard import FiniteCheck


class EpisodeStats:
    """Sums of the returns and lengths of finished episodes, as device scalars: added to
    without a host read, read by the trainer once per log."""

    NAMES = ("episode_return_sum", "episode_length_sum", "episode_count")

    def __init__(self, device: torch.device):
        self.device = device
        self._zero()

    def _zero(self) -> None:
        self.episode_return_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        self.episode_length_sum = torch.zeros((), dtype=torch.int64, device=self.device)
        self.episode_count = torch.zeros((), dtype=torch.int64, device=self.device)

    def add(self, returns: torch.Tensor, lengths: torch.Tensor) -> None:
        """Fold in per-step returns and lengths of episodes ending there (0 elsewhere)."""
        self.episode_return_sum += returns.sum()
        self.episode_length_sum += lengths.sum()
        self.episode_count += (lengths > 0).sum()

    def pop(self) -> dict[str, torch.Tensor]:
        """Mean return and length of the episodes finished since the last call, and their
        count (means are 0 when no episode finished)."""
        count = self.episode_count.double()
        stats = {
            "charts/episode_return": self.episode_return_sum / count.clamp_min(1),
            "charts/episode_length": self.episode_length_sum.double() / count.clamp_min(1),
            "charts/episodes": count,
        }
        self._zero()
        return stats

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in self.NAMES}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self.NAMES:
            getattr(self, name).copy_(state[name])


class RolloutStorage:
    """Preallocated [T, N, ...] tensors on the training device, overwritten every rollout."""

    def __init__(self, n_steps: int, env: VectorEnvBackend, state_shape: tuple[int, ...] | None = None):
        T, N, device = n_steps, env.num_envs, env.device
        obs_shape = storage_shape(env.single_observation_space)  # images stay uint8
        action_shape = env.single_action_space.shape
        self.obs = torch.zeros((T, N, *obs_shape), dtype=env.obs_dtype, device=device)
        self.actions = torch.zeros((T, N, *action_shape), dtype=torch_dtype(env.single_action_space), device=device)
        self.log_probs = torch.zeros((T, N), device=device)
        self.values = torch.zeros((T, N), device=device)
        self.rewards = torch.zeros((T, N), device=device)
        self.terminated = torch.zeros((T, N), dtype=torch.bool, device=device)
        self.truncated = torch.zeros((T, N), dtype=torch.bool, device=device)
        # the observation each step reached (before any autoreset), for truncation bootstraps
        self.final_obs = torch.zeros((T, N, *obs_shape), dtype=env.obs_dtype, device=device)
        self.episode_returns = torch.zeros((T, N), device=device)  # raw return of episodes ending here, else 0
        self.episode_lengths = torch.zeros((T, N), dtype=torch.int64, device=device)  # their lengths, else 0
        self.states = self.starts = None
        if state_shape is not None:  # recurrent policies: the state before each step, and episode starts
            self.states = torch.zeros((T, N, *state_shape), device=device)
            self.starts = torch.zeros((T, N), dtype=torch.bool, device=device)


class OnPolicyCollector:
    """Steps a batched env with an on-policy agent for n_steps at a time.

    Keeps the observation to act on next between rollouts, sums of finished episodes'
    returns and lengths as device tensors (read by the trainer once per log), and the
    seconds spent stepping envs and running the policy.
    """

    select_truncated = True
    """On the CPU, evaluate V only at the final observations of truncated steps (False: at all of
    them, as on a GPU; benchmarks/atari_throughput.py uses it to run the code before issue 19)."""

    def __init__(self, env: VectorEnvBackend, agent: OnPolicyAgent, n_steps: int):
        self.env, self.agent, self.n_steps = env, agent, n_steps
        self.state = agent.initial_state(env.num_envs)  # recurrent policies: [N, S, H]; else none
        self.starts = torch.ones(env.num_envs, dtype=torch.bool, device=env.device)
        self.storage = RolloutStorage(n_steps, env, None if self.state is None else tuple(self.state.shape[1:]))
        self.obs: torch.Tensor | None = None  # [N, *obs_shape]
        self.episodes = EpisodeStats(env.device)
        self.env_seconds = 0.0
        self.inference_seconds = 0.0

    def reset(self, seed: int | None) -> None:
        self.obs, _ = self.env.reset(seed=seed)
        self.starts.fill_(True)

    def collect(self) -> Rollout:
        """Run n_steps steps in every env and return them as a `Rollout` (views of the storage).

        On a GPU nothing here reads a device value on the host: with a native env the whole
        rollout is queued as device work.
        """
        with self.agent.frozen():  # the weights stay as they are for the whole rollout
            next_values = self._run()
        s = self.storage
        self.episodes.add(s.episode_returns, s.episode_lengths)
        return Rollout(
            s.obs,
            s.actions,
            s.log_probs,
            s.values,
            s.rewards,
            s.terminated,
            s.truncated,
            next_values,
            s.states,
            s.starts,
            s.final_obs,
            self.obs,
        )

    def _run(self) -> torch.Tensor:
        """The rollout's steps into the storage; V(s') of each step [T, N]."""
        s, env, agent = self.storage, self.env, self.agent
        clock = time.perf_counter
        env_seconds = inference_seconds = 0.0
        recurrent = self.state is not None
        for t in range(self.n_steps):
            t0 = clock()
            policy = agent.act(self.obs, state=self.state, starts=self.starts)
            t1 = clock()
            next_obs, reward, terminated, truncated, info = env.step(policy.action)
            t2 = clock()
            if recurrent:
                s.states[t] = self.state
                s.starts[t] = self.starts
                self.state = policy.state
            self.starts = terminated | truncated
            s.obs[t] = self.obs
            s.actions[t] = policy.action
            s.log_probs[t] = policy.log_prob
            s.values[t] = policy.value
            s.rewards[t] = reward
            s.terminated[t] = terminated
            s.truncated[t] = truncated
            s.final_obs[t] = info.final_obs
            s.episode_returns[t] = info.episode_return
            s.episode_lengths[t] = info.episode_length
            self.obs = next_obs
            t3 = clock()
            env_seconds += t2 - t1
            inference_seconds += (t1 - t0) + (t3 - t2)
        t0 = clock()
        # V(s') of each step: the next step's value, except where a time limit cut the episode:
        # that is not a terminal state, so bootstrap from the state it stopped in.
        last_value = agent.value(self.obs, self.state, self.starts)
        next_values = torch.cat([s.values[1:], last_value.unsqueeze(0)])
        if s.truncated.device.type == "cpu" and self.select_truncated:
            # Reading which steps were cut costs nothing here: evaluate those alone (for a CNN, the
            # forward over every step's final observation took 9% of a PPO Atari iteration).
            steps, envs_ = s.truncated.nonzero(as_tuple=True)
            if len(steps):
                next_values[steps, envs_] = self._final_values(steps, envs_)
        else:  # on a GPU one batched forward over all final observations costs less than a sync
            final_values = self._final_values().view_as(next_values)
            next_values = torch.where(s.truncated, final_values, next_values)
        self.inference_seconds += inference_seconds + clock() - t0
        self.env_seconds += env_seconds
        return next_values

    def _final_values(self, steps: torch.Tensor | None = None, envs_: torch.Tensor | None = None) -> torch.Tensor:
        """V of the final observations at (steps, envs_), or of all of them flattened [T*N]; a
        recurrent policy evaluates each from the state its step left behind (the next step's input)."""
        s = self.storage
        final_obs = s.final_obs.flatten(0, 1) if steps is None else s.final_obs[steps, envs_]
        if self.state is None:
            return self.agent.value(final_obs)
        after = torch.cat([s.states[1:], self.state.unsqueeze(0)])
        after = after.flatten(0, 1) if steps is None else after[steps, envs_]
        no_reset = torch.zeros(after.shape[0], dtype=torch.bool, device=after.device)
        return self.agent.value(final_obs, after, no_reset)

    def pop_episode_stats(self) -> dict[str, torch.Tensor]:
        return self.episodes.pop()

    def state_dict(self) -> dict[str, Any]:
        return {"obs": self.obs, "policy_state": self.state, "starts": self.starts, **self.episodes.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore; a state without observations (saved by a run on Ray workers) keeps the
        episodes this collector's envs are in."""
        if "obs" in state:
            self.obs = state["obs"].to(self.env.device)
            if self.state is not None:
                self.state = state["policy_state"].to(self.env.device)
            self.starts = state["starts"].to(self.env.device)
        self.episodes.load_state_dict(state)


class OnPolicyLoop:
    """Drives an on-policy agent: one iteration collects a rollout and updates on it."""

    def __init__(self, env: VectorEnvBackend, agent: OnPolicyAgent, total_steps: int):
        self.agent, self.total_steps = agent, total_steps
        self.collector = OnPolicyCollector(env, agent, agent.n_steps)
        self.steps_per_iteration = agent.n_steps * env.num_envs
        self.update_seconds = 0.0
        self.finite = FiniteCheck()  # read by the trainer

    @property
    def seconds(self) -> dict[str, float]:
        c = self.collector
        return {"env": c.env_seconds, "inference": c.inference_seconds, "update": self.update_seconds}

    def reset(self, seed: int | None) -> None:
        self.collector.reset(seed)

    def iterate(self, global_step: int) -> dict[str, Any]:
        rollout = self.collector.collect()
        self.finite.watch("observations", rollout.obs)
        self.finite.watch("rewards", rollout.rewards)
        t0 = time.perf_counter()
        metrics = self.agent.update(rollout, Progress(global_step + self.steps_per_iteration, self.total_steps))
        self.update_seconds += time.perf_counter() - t0
        return metrics

    def pop_episode_stats(self) -> dict[str, torch.Tensor]:
        return self.collector.pop_episode_stats()

    def state_dict(self, with_buffer: bool = False) -> dict[str, Any]:
        return {**self.collector.state_dict(), "seconds": self.seconds}

    def load_state_dict(self, state: dict[str, Any]) -> bool:
        self.collector.load_state_dict(state)
        c = self.collector
        c.env_seconds, c.inference_seconds = state["seconds"]["env"], state["seconds"]["inference"]
        self.update_seconds = state["seconds"]["update"]
        return False
