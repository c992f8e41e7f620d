"""Evaluation rollouts: run a policy for whole episodes on a fresh env and report raw returns
(for Atari, true game scores: evaluation envs neither clip rewards nor end at a lost life)."""

from __future__ import annotations

import shutil
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import envs


@dataclass
class EvalResult:
    """Raw (unnormalised, unclipped) returns and lengths of whole episodes."""

    returns: list[float]
    lengths: list[int]

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
        }


def evaluate(
    agent: Any,
    env_id: str,
    episodes: int,
    seed: int,
    deterministic: bool = True,
    num_envs: int | None = None,
    max_steps: int = 1_000_000,
    video: Path | None = None,
) -> EvalResult:
    """Play `episodes` whole episodes of `env_id` with `agent` on new envs seeded from `seed`.

    The agent's normaliser statistics are not updated. Envs are given equal shares of the
    episodes, so that short episodes do not crowd out long ones (as SB3's evaluate_policy).
    With `video` (a path ending in .mp4), env 0's first episode is recorded there.
    """
    n = num_envs or min(episodes, 8)
    recording = {}
    if video is not None:  # RecordVideo writes into a folder of its own; the file is moved to `video`
        video, staging = Path(video), tempfile.TemporaryDirectory(prefix="drl-video-")
        recording = {"video_dir": staging.name, "video_prefix": "eval"}
    env = envs.make(env_id, n, "gym", seed=seed, device=agent.device, training=False, **recording)
    generator = torch.Generator(agent.device).manual_seed(seed)
    targets = np.array([(episodes + i) // n for i in range(n)])
    counts = np.zeros(n, dtype=np.int64)
    returns: list[float] = []
    lengths: list[int] = []
    try:
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
            obs, _, terminated, truncated, info = env.step(action)
            starts = terminated | truncated
            done = starts.cpu().numpy()
            if done.any():
                ep_return = info.episode_return.cpu().numpy()
                ep_length = info.episode_length.cpu().numpy()
                for i in np.flatnonzero(done & (counts < targets)):
                    returns.append(float(ep_return[i]))
                    lengths.append(int(ep_length[i]))
                    counts[i] += 1
    finally:
        env.close()  # RecordVideo writes the file here
    if video is not None:
        written = Path(staging.name) / "eval-episode-0.mp4"
        if written.exists():
            video.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(written, video)
        staging.cleanup()
    if not returns:
        raise envs.EnvError(
            f"no episode of {env_id} ended within {max_steps} steps; give the env a time limit (max_episode_steps)"
        )
    return EvalResult(returns, lengths)
