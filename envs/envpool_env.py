"""EnvPool (Weng et al. 2022) as a backend: Atari and MuJoCo envs stepped in C++ threads.

`EnvPoolVectorEnv` speaks the same tensors as `envs.TorchVectorEnv`. EnvPool resets a
finished env on the step after it ended (its action is then ignored); here finished envs
are reset at once, so every step is a real transition, the final observation is the
returned one and the next observation the fresh episode's, as with same-step autoreset.

Atari ids (`ALE/Pong-v5`, `PongNoFrameskip-v4`) get the preprocessing of `envs.atari`
from EnvPool's own options (no-op reset, frame skip 4 with max-pool, 84x84 grayscale,
4-frame stack, FIRE reset), with sticky actions for v5 ids. Episodic life and reward
clipping for training are done here rather than by EnvPool, whose own episodic life
cannot be combined with an immediate reset; episode statistics are true game scores.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs.atari import ATARI_V4_ID, ATARI_V5_ID
from envs.interface import StepInfo
from envs.spaces import host_tensor, torch_dtype


def envpool_task(env_id: str) -> tuple[str, dict[str, Any], bool]:
    """EnvPool's task id for `env_id`, the options that make it match our Gymnasium
    version, and whether it is Atari. KeyError where EnvPool has no such env."""
    import envpool

    for pattern, sticky in ((ATARI_V5_ID, 0.25), (ATARI_V4_ID, 0.0)):
        match = pattern.match(env_id)
        if match:
            task = f"{match['game']}-v5"
            options = {"repeat_action_probability": sticky, "episodic_life": False, "reward_clip": False}
            if task not in envpool.list_all_envs():
                raise KeyError(env_id)
            return task, options, True
    if env_id not in envpool.list_all_envs():
        raise KeyError(env_id)
    return env_id, {}, False


class EnvPoolVectorEnv:
    """A batch of EnvPool envs with tensor inputs and outputs (an `envs.VectorEnvBackend`); see the module docstring."""

    def __init__(
        self,
        env_id: str,
        num_envs: int,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        training: bool = True,
        num_threads: int = 0,
        **kwargs: Any,
    ):
        import envpool

        task, options, self.atari = envpool_task(env_id)
        self.env = envpool.make(
            task,
            env_type="gymnasium",
            num_envs=num_envs,
            seed=0 if seed is None else int(seed) % 2**31,  # EnvPool takes int32 seeds
            num_threads=num_threads,
            **{**options, **kwargs},
        )
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.training = training
        self.single_observation_space = self.env.observation_space
        self.single_action_space = self.env.action_space
        self.render_mode = None
        self.obs_dtype = torch_dtype(self.single_observation_space)
        self.spec = None
        self.metadata: dict[str, Any] = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
        space = self.single_action_space
        self._action_low = self._action_high = None
        if isinstance(space, gym.spaces.Box):
            self._action_low, self._action_high = space.low, space.high
        self._episode_return = np.zeros(num_envs, dtype=np.float64)
        self._episode_length = np.zeros(num_envs, dtype=np.int64)
        self._lives = np.zeros(num_envs, dtype=np.int64)

    def _tensor(self, array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return host_tensor(array, self.device, dtype)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[torch.Tensor, dict]:
        obs, info = self.env.reset()
        self._episode_return[:] = 0.0
        self._episode_length[:] = 0
        self._lives[:] = info.get("lives", 0)
        return self._tensor(obs, self.obs_dtype), {}

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, StepInfo]:
        actions = actions.detach().cpu().numpy()
        if self._action_low is not None:
            actions = np.clip(actions, self._action_low, self._action_high)
        obs, reward, terminated, truncated, info = self.env.step(actions)
        reward = np.asarray(reward, dtype=np.float64)

        self._episode_return += reward
        self._episode_length += 1
        game_over = terminated | truncated
        episode_return = np.where(game_over, self._episode_return, 0.0)
        episode_length = np.where(game_over, self._episode_length, 0)
        self._episode_return[game_over] = 0.0
        self._episode_length[game_over] = 0

        if self.atari and self.training:
            lives = info["lives"]
            terminated = terminated | ((lives < self._lives) & (lives > 0))  # episodic life
            self._lives[:] = lives
            reward = np.sign(reward)

        final_obs = self._tensor(obs, self.obs_dtype)
        next_obs = final_obs
        if game_over.any():  # start the new games now: the next action acts in them
            ids = np.flatnonzero(game_over)
            fresh, fresh_info = self.env.reset(ids)
            obs = obs.copy()
            obs[ids] = fresh
            if "lives" in fresh_info:
                self._lives[ids] = fresh_info["lives"]
            next_obs = self._tensor(obs, self.obs_dtype)
        info_out = StepInfo(
            final_obs,
            self._tensor(episode_return, torch.float32),
            self._tensor(episode_length, torch.int64),
            bool(game_over.any()),
        )
        return (
            next_obs,
            self._tensor(reward, torch.float32),
            self._tensor(terminated, torch.bool),
            self._tensor(truncated, torch.bool),
            info_out,
        )

    def render(self):
        raise NotImplementedError("EnvPool envs do not render; evaluate with --backend gym to record videos")

    def close(self, **kwargs: Any) -> None:
        self.env.close()

    def state_dict(self) -> dict[str, Any]:
        raise TypeError("EnvPool envs cannot be saved; a resumed run starts new episodes")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise TypeError("EnvPool envs cannot be restored")
