"""Atari 2600 games through Gymnasium and ale-py, with the standard preprocessing.

As in the DQN papers, Stable-Baselines3's AtariWrapper and CleanRL: up to 30 no-op
actions after a reset, 4 frames per action with the last two max-pooled, 84x84
grayscale frames, FIRE pressed after a reset in games that need it, and a stack of the
last 4 frames, so observations are uint8 [4, 84, 84]. Training envs also end an episode
at every lost life (the game itself continues) and clip rewards to their sign; evaluation
envs do neither. Either way the game score and length are recorded before those two
wrappers, so logs and evaluations report true game scores.

The `ALE/Name-v5` ids keep their sticky actions (repeat_action_probability 0.25, Machado
et al. 2018); `NameNoFrameskip-v4` ids have none.

Evaluation episodes end, truncated, after the standard 108,000 emulator frames (30 minutes
of play at 60 Hz; 27,000 agent steps at frameskip 4): Dopamine's Runner.max_steps_per_episode
(27000 agent steps, dopamine/agents/dqn/configs/dqn.gin) and ale-py's registered
max_num_frames_per_episode. A time limit in raw frames holds it for every id, whatever its
registration says, so that an evaluation of a policy that never starts the game (never
presses FIRE) still ends.
"""

from __future__ import annotations

import re
from typing import Any

import gymnasium as gym
import numpy as np

FRAME_STACK = 4
FRAME_SKIP = 4
EVAL_MAX_FRAMES = 108_000
"""Emulator frames after which an evaluation episode is truncated (see the module docstring)."""
ATARI_V5_ID = re.compile(r"^ALE/(?P<game>[A-Za-z]+)-v5$")
ATARI_V4_ID = re.compile(r"^(?P<game>[A-Za-z]+)NoFrameskip-v4$")


def is_atari(spec: gym.envs.registration.EnvSpec) -> bool:
    """Whether `spec` is an ale-py Atari game."""
    entry = spec.entry_point if isinstance(spec.entry_point, str) else getattr(spec.entry_point, "__module__", "")
    return spec.namespace == "ALE" or str(entry).startswith("ale_py")


class EpisodicLife(gym.Wrapper):
    """End the episode (terminated) when a life is lost; the next reset() continues the same
    game with a no-op step, and only a real game over resets the game."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.lives = 0
        self.game_over = True

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.game_over = terminated or truncated
        lives = self.env.unwrapped.ale.lives()
        if 0 < lives < self.lives:
            terminated = True
        self.lives = lives
        return obs, reward, terminated, truncated, info

    def reset(self, **kwargs: Any):
        if self.game_over:
            obs, info = self.env.reset(**kwargs)
        else:
            obs, _, terminated, truncated, info = self.env.step(0)
            if terminated or truncated:  # the no-op ended the game: start a new one
                obs, info = self.env.reset(**kwargs)
        self.game_over = False
        self.lives = self.env.unwrapped.ale.lives()
        return obs, info


class FireReset(gym.Wrapper):
    """Press FIRE (then UP) after a reset, for games that wait for it to start."""

    def reset(self, **kwargs: Any):
        self.env.reset(**kwargs)
        for action in (1, 2):
            obs, _, terminated, truncated, info = self.env.step(action)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
        return obs, info


class ClipRewardSign(gym.RewardWrapper):
    """Rewards become their sign: -1, 0 or 1."""

    def reward(self, reward: float) -> float:
        return float(np.sign(reward))


class Preprocessing(gym.wrappers.AtariPreprocessing):
    """Gymnasium's AtariPreprocessing, stepping the emulator itself between the frames it keeps.

    AtariPreprocessing steps the raw env once per frame (4 per agent step), and the raw env
    copies the screen and builds an info dict at each, which the wrapper drops: it reads the two
    screens it pools from the emulator. Where the raw env is ale-py's AtariEnv under gym.make's
    OrderEnforcing and PassiveEnvChecker only (no TimeLimit: the training envs), this does what
    that chain does per frame (`ale.act`, then game over and truncation as AtariEnv reads them)
    and builds the info of the last frame once. The observations, rewards, ends and infos are
    AtariPreprocessing's (tested); an agent step took 0.29-0.30 ms instead of 0.35 ms (Pong, one
    env, the 2-core CPU of the benchmarks).
    Any other raw env (a TimeLimit for evaluation, another wrapper, continuous actions), or
    terminal_on_life_loss, is stepped through its wrappers as AtariPreprocessing does."""

    def __init__(self, env: gym.Env, **kwargs: Any):
        super().__init__(env, **kwargs)
        chain, inner = set(), env
        while isinstance(inner, gym.Wrapper):
            chain.add(type(inner))
            inner = inner.env
        plain = chain <= {gym.wrappers.OrderEnforcing, gym.wrappers.PassiveEnvChecker}
        direct = plain and not getattr(inner, "continuous", True) and hasattr(inner, "_get_info")
        self._raw = inner if direct and not self.terminal_on_life_loss else None

    def step(self, action: Any):
        raw = self._raw
        if raw is None:
            return super().step(action)
        ale, action_idx = raw.ale, raw._action_set[action]
        total_reward, terminated, truncated = 0.0, False, False
        for t in range(self.frame_skip):
            total_reward += ale.act(action_idx, 1.0)
            terminated = ale.game_over(with_truncation=False)
            truncated = ale.game_truncated()
            self.game_over = terminated
            if terminated or truncated:
                break
            if t == self.frame_skip - 2:
                self._screen(self.obs_buffer[1])
            elif t == self.frame_skip - 1:
                self._screen(self.obs_buffer[0])
        return self._get_obs(), total_reward, terminated, truncated, raw._get_info()

    def _screen(self, out: np.ndarray) -> None:
        if self.grayscale_obs:
            self.ale.getScreenGrayscale(out)
        else:
            self.ale.getScreenRGB(out)


def make_atari(spec: gym.envs.registration.EnvSpec, training: bool, **kwargs: Any) -> gym.Env:
    """One preprocessed Atari env (see the module docstring); `training` adds episodic life
    and reward clipping, evaluation the cap of EVAL_MAX_FRAMES frames per episode."""
    if not training:  # the raw env steps one frame at a time: its time limit counts frames
        kwargs = {"max_episode_steps": EVAL_MAX_FRAMES, "max_num_frames_per_episode": EVAL_MAX_FRAMES, **kwargs}
    # AtariPreprocessing reads the two screens it pools from the emulator itself and drops what the
    # raw env returns at each of the 4 frames: grayscale is the cheapest screen ale-py's env can
    # return (its RGB copy per frame took a fifth of the time of stepping Pong here).
    env = gym.make(spec, frameskip=1, **{"obs_type": "grayscale", **kwargs})
    env = Preprocessing(env, noop_max=30, frame_skip=FRAME_SKIP, screen_size=84, grayscale_obs=True)
    env = gym.wrappers.RecordEpisodeStatistics(env)  # true game scores, in agent steps
    if training:
        env = EpisodicLife(env)
    if "FIRE" in env.unwrapped.get_action_meanings():
        env = FireReset(env)
    if training:
        env = ClipRewardSign(env)
    return gym.wrappers.FrameStackObservation(env, FRAME_STACK)
