"""The off-policy loop: step the envs into a replay buffer, train at the update-to-data ratio.

One iteration steps all envs ceil(train_every / num_envs) times (uniformly random actions
until learning_starts env steps, the agent's exploration after), adding every step to the
replay buffer, then, once past learning_starts, runs the gradient steps owed: utd_ratio per
env step of the iteration, with fractions carried over to the next one. The loop owns the
buffer: for each gradient step it samples a minibatch (with the agent's generator), hands it
to `agent.update`, and writes the TD errors it returns into the priorities when sampling is
prioritised.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from agents import ConfigError, OffPolicyAgent, Progress
from envs import VectorEnvBackend, first_line
from runners.guard import FiniteCheck
from runners.replay import ReplayBuffer
from runners.rollout import EpisodeStats


def make_buffer(*args: Any, **kwargs: Any) -> ReplayBuffer:
    """A ReplayBuffer, or a one-line ConfigError when its memory cannot be allocated."""
    try:
        return ReplayBuffer(*args, **kwargs)
    except (RuntimeError, MemoryError) as exc:  # torch.OutOfMemoryError is a RuntimeError
        reason = first_line(exc)
        raise ConfigError(
            f"cannot allocate a replay buffer of {args[0]:,} transitions: {reason}; lower --buffer-size"
        ) from None


class OffPolicyLoop:
    """Drives an off-policy agent: collection into replay storage on the device, then updates."""

    def __init__(self, env: VectorEnvBackend, agent: OffPolicyAgent, total_steps: int, frame_stack: int = 0):
        """`frame_stack`: the frames each observation stacks along its first axis, newest last
        (`envs.frame_stack`; 0: none), which the buffer then stores once each unless the
        config's share_frames is false."""
        cfg = agent.config
        if cfg.share_frames and not frame_stack:
            raise ConfigError("--share-frames needs observations that stack frames (Atari games); this env's do not")
        self.env, self.agent, self.total_steps = env, agent, total_steps
        self.finite = FiniteCheck()  # read by the trainer
        if math.ceil(cfg.buffer_size / env.num_envs) <= cfg.n_step:
            raise ConfigError(
                f"--buffer-size {cfg.buffer_size} must hold more than --n-step {cfg.n_step} steps of each of the "
                f"{env.num_envs} envs"
            )
        self.buffer = make_buffer(
            cfg.buffer_size,
            env.num_envs,
            env.single_observation_space,
            env.single_action_space,
            env.device,
            env.obs_dtype,
            n_step=cfg.n_step,
            gamma=cfg.gamma,
            prioritized=cfg.prioritized,
            alpha=cfg.per_alpha,
            priority_eps=cfg.per_eps,
            share_frames=bool(frame_stack) and cfg.share_frames is not False,
        )
        self.vector_steps = max(1, math.ceil(cfg.train_every / env.num_envs))
        self.steps_per_iteration = self.vector_steps * env.num_envs
        self.updates_owed = 0.0
        self.obs: torch.Tensor | None = None
        self.episodes = EpisodeStats(env.device)
        self.seconds = {"env": 0.0, "inference": 0.0, "update": 0.0}

    def reset(self, seed: int | None) -> None:
        self.obs, _ = self.env.reset(seed=seed)
        self.buffer.mark_episode_break()  # the next step of every env begins an episode

    def iterate(self, global_step: int) -> dict[str, Any]:
        """Collect steps_per_iteration env steps and train; returns the agent's metrics."""
        cfg, agent, env, buffer = self.agent.config, self.agent, self.env, self.buffer
        clock = time.perf_counter
        env_seconds = inference_seconds = 0.0
        step = global_step
        for _ in range(self.vector_steps):
            t0 = clock()
            if step < cfg.learning_starts:
                action = agent.random_action(env.num_envs)
            else:
                action = agent.explore(self.obs, Progress(step, self.total_steps))
            t1 = clock()
            next_obs, reward, terminated, truncated, info = env.step(action)
            t2 = clock()
            buffer.add(self.obs, action, reward, terminated, truncated, info.final_obs)
            self.finite.watch("observations", next_obs)  # (on the device: read once per update)
            self.finite.watch("rewards", reward)
            if info.episodes_ended is not False:  # (None: the env cannot tell without a device read)
                self.episodes.add(info.episode_return, info.episode_length)
            self.obs = next_obs
            step += env.num_envs
            env_seconds += t2 - t1
            inference_seconds += (t1 - t0) + (clock() - t2)
        self.seconds["env"] += env_seconds
        self.seconds["inference"] += inference_seconds

        if step <= cfg.learning_starts:
            return {}
        # as Stable-Baselines3: the first training phase after learning_starts owes a whole phase
        self.updates_owed += cfg.utd_ratio * (step - global_step)
        gradient_steps = int(self.updates_owed)
        self.updates_owed -= gradient_steps
        if gradient_steps == 0 or len(buffer) == 0:  # minibatches are drawn with replacement, as SB3's
            return {}
        t0 = clock()
        metrics = self.train(gradient_steps, Progress(step, self.total_steps))
        self.seconds["update"] += clock() - t0
        metrics["charts/gradient_steps"] = agent.gradient_steps
        metrics["charts/buffer_size"] = len(buffer)
        return metrics

    def train(self, gradient_steps: int, progress: Progress) -> dict[str, Any]:
        """`gradient_steps` updates, each on a fresh minibatch; the metrics of the last ones."""
        cfg, agent, buffer = self.agent.config, self.agent, self.buffer
        beta = cfg.per_beta + (1.0 - cfg.per_beta) * progress.fraction  # importance weights: annealed to 1
        metrics: dict[str, Any] = {}
        for _ in range(gradient_steps):
            batch = buffer.sample(cfg.batch_size, agent.generator, beta)
            step_metrics, td_errors = agent.update(batch, progress)
            if cfg.prioritized:
                buffer.update_priorities(batch.indices, td_errors)
            metrics.update(step_metrics)  # (an update may leave a metric out: TD3's delayed actor)
        return metrics

    def pop_episode_stats(self) -> dict[str, torch.Tensor]:
        return self.episodes.pop()

    def state_dict(self, with_buffer: bool = False) -> dict[str, Any]:
        state = {
            "obs": self.obs,
            "updates_owed": self.updates_owed,
            "seconds": dict(self.seconds),
            **self.episodes.state_dict(),
        }
        if with_buffer:
            state["buffer"] = self.buffer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> bool:
        """Restore; returns whether the state held a replay buffer."""
        self.obs = state["obs"].to(self.env.device)
        self.updates_owed = float(state["updates_owed"])
        self.seconds.update(state["seconds"])
        self.episodes.load_state_dict(state)
        if "buffer" in state:
            self.buffer.load_state_dict(state["buffer"])
            return True
        return False
