"""Evaluation rollouts: run a policy for whole episodes on a fresh env and report raw returns
(for Atari, true game scores: evaluation envs neither clip rewards nor end at a lost life).

How actions are chosen is the evaluation protocol: the policy's action, deterministic (the
most likely) or sampled, replaced with probability epsilon (per env and step) by a uniformly
random action. `evaluation_protocol` gives the defaults, which follow the literature:

- On ALE (Atari) games, policy-gradient agents (PPO, A2C, APPO, recurrent PPO) sample their
  actions, with epsilon 0, as rl-baselines3-zoo's enjoy.py does for Atari ("deterministic by
  default except for atari games"): a deterministic policy that is not yet trained may never
  press FIRE to serve a new ball, and its episodes then run to the frame cap.
- On ALE games, value-based agents (the DQN family) act greedily with epsilon 0.001:
  Dopamine's epsilon_eval (dopamine/agents/dqn/dqn_agent.py), whose Atari protocol follows
  Machado et al. 2018 ("Revisiting the Arcade Learning Environment", JAIR 61).
- Everywhere else: deterministic, epsilon 0.

Atari evaluation episodes are also truncated after 108,000 frames (envs/atari.py), and an
evaluation reports how many of its episodes were truncated (`eval/truncated_episodes`) rather
than ended by the game.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import envs
from agents import AlgorithmSpec, get_algorithm
from envs.atari import is_atari
from envs.render import render_failures

ATARI_VALUE_BASED_EPSILON = 0.001
"""Evaluation epsilon of value-based agents on Atari (Dopamine's epsilon_eval)."""


@dataclass
class EvalResult:
    """Raw (unnormalised, unclipped) returns and lengths of whole episodes."""

    returns: list[float]
    lengths: list[int]
    truncated: int = 0
    """Episodes that ended by truncation (a time limit, the Atari frame cap), not by the env's own end."""

    @property
    def mean_return(self) -> float:
        return statistics.fmean(self.returns)

    @property
    def std_return(self) -> float:
        return statistics.pstdev(self.returns)

    def metrics(self, prefix: str = "eval/") -> dict[str, float]:
        return {
            f"{prefix}mean_return": self.mean_return,
            f"{prefix}std_return": self.std_return,
            f"{prefix}mean_length": statistics.fmean(self.lengths),
            f"{prefix}truncated_episodes": float(self.truncated),
        }


def is_value_based(spec: AlgorithmSpec) -> bool:
    """Whether the algorithm acts greedily on learned action values (the DQN family): an
    off-policy learner of Discrete actions only (the actor-critic ones, SAC and TD3, act in Box)."""
    return spec.kind == "off_policy" and all(issubclass(space, gym.spaces.Discrete) for space in spec.action_spaces)


def evaluation_protocol(
    algo: str, env_id: str, deterministic: bool | None = None, epsilon: float | None = None
) -> tuple[bool, float]:
    """(deterministic, epsilon) for evaluating the algorithm `algo` on `env_id`: the values
    given, and for those left None the protocol's defaults (see the module docstring)."""
    default = (True, 0.0)
    if is_atari(envs.resolve_env_id(env_id)):
        default = (True, ATARI_VALUE_BASED_EPSILON) if is_value_based(get_algorithm(algo)) else (False, 0.0)
    return (default[0] if deterministic is None else deterministic, default[1] if epsilon is None else epsilon)


def random_actions(space: gym.Space, n: int, generator: torch.Generator) -> torch.Tensor:
    """`n` uniformly random actions of `space` [N, ...] on the generator's device, as agents
    emit them (Discrete and MultiDiscrete counted from 0; Box within its bounds, normal where
    a bound is infinite)."""
    device = generator.device
    if isinstance(space, gym.spaces.Discrete):
        return torch.randint(0, int(space.n), (n,), generator=generator, device=device)
    if isinstance(space, gym.spaces.MultiDiscrete):
        nvec = torch.as_tensor(space.nvec, device=device)
        return (torch.rand((n, *nvec.shape), generator=generator, device=device) * nvec).long().minimum(nvec - 1)
    if isinstance(space, gym.spaces.Box):
        low = torch.as_tensor(space.low, dtype=torch.float32, device=device)
        high = torch.as_tensor(space.high, dtype=torch.float32, device=device)
        bounded = torch.isfinite(low) & torch.isfinite(high)
        uniform = torch.rand((n, *space.shape), generator=generator, device=device)
        normal = torch.randn((n, *space.shape), generator=generator, device=device)
        span = torch.where(bounded, high - low, 0.0)
        return torch.where(bounded, low + uniform * span, normal).clamp(low, high)
    raise ValueError(f"random evaluation actions (epsilon > 0) are not supported in the action space {space}")


def evaluate(
    agent: Any,
    env_id: str,
    episodes: int,
    seed: int,
    deterministic: bool = True,
    num_envs: int | None = None,
    max_steps: int = 1_000_000,
    video: Path | None = None,
    epsilon: float = 0.0,
) -> EvalResult:
    """Play `episodes` whole episodes of `env_id` with `agent` on new envs seeded from `seed`.

    Actions are the policy's (`deterministic` or sampled), each replaced with probability
    `epsilon` by a uniformly random action of the env's action space; both draws come from
    the evaluation's own generator, seeded from `seed` (`evaluation_protocol` picks the two
    for an algorithm and env). The agent's normaliser statistics are not updated. Envs are
    given equal shares of the episodes, so that short episodes do not crowd out long ones (as
    SB3's evaluate_policy). With `video` (a path ending in .mp4), env 0's first episode is
    recorded there; where frames cannot be rendered, envs.render.RenderError says what to install.
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    n = num_envs or min(episodes, 8)
    recording = {}
    if video is not None:  # RecordVideo writes into a new folder of its own; the file is moved to `video`
        video, staging = Path(video), tempfile.TemporaryDirectory(prefix="drl-video-")
        recording = {"video_dir": str(Path(staging.name) / "video"), "video_prefix": "eval"}
    generator = torch.Generator(agent.device).manual_seed(seed)
    targets = np.array([(episodes + i) // n for i in range(n)])
    counts = np.zeros(n, dtype=np.int64)
    returns: list[float] = []
    lengths: list[int] = []
    truncations = 0
    with render_failures(env_id) if video is not None else contextlib.nullcontext():
        env = envs.make(env_id, n, "gym", seed=seed, device=agent.device, training=False, **recording)
        try:
            action_space = env.single_action_space
            obs, _ = env.reset()
            state = agent.initial_state(n) if getattr(agent, "recurrent", False) else None
            starts = torch.ones(n, dtype=torch.bool, device=agent.device)
            for _ in range(max_steps):
                if (counts >= targets).all():
                    break
                if state is None:
                    action = agent.predict(obs, deterministic=deterministic, generator=generator)
                else:  # recurrent policies carry their state from step to step
                    out = agent.act(obs, deterministic, generator, state=state, starts=starts)
                    action, state = out.action, out.state
                if epsilon > 0:  # (no draw at all otherwise: epsilon 0 plays exactly the policy)
                    explore = torch.rand(n, generator=generator, device=generator.device) < epsilon  # [N]
                    random = random_actions(action_space, n, generator).to(action.device, action.dtype)
                    action = torch.where(explore.to(action.device).view(n, *[1] * (action.dim() - 1)), random, action)
                obs, _, terminated, truncated, info = env.step(action)
                starts = terminated | truncated
                done = starts.cpu().numpy()
                if done.any():
                    cut = (truncated & ~terminated).cpu().numpy()  # ended by the time limit, not by the env
                    ep_return = info.episode_return.cpu().numpy()
                    ep_length = info.episode_length.cpu().numpy()
                    for i in np.flatnonzero(done & (counts < targets)):
                        returns.append(float(ep_return[i]))
                        lengths.append(int(ep_length[i]))
                        truncations += int(cut[i])
                        counts[i] += 1
        finally:
            with warnings.catch_warnings():  # after a failed render, RecordVideo has no frames: the error says why
                warnings.filterwarnings("ignore", message=".*zero frames to save")
                env.close()  # RecordVideo writes the file here
    if video is not None:
        written = Path(staging.name) / "video" / "eval-episode-0.mp4"
        if written.exists():
            video.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(written, video)
        staging.cleanup()
    if not returns:
        raise envs.EnvError(
            f"no episode of {env_id} ended within {max_steps} steps; give the env a time limit (max_episode_steps)"
        )
    return EvalResult(returns, lengths, truncations)
