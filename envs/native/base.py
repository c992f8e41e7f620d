"""The shared machinery of native (torch) batched environments."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs.interface import StepInfo
from envs.native.rng import uniform


class NativeVectorEnv(gym.vector.VectorEnv):
    """N copies of one Gymnasium environment, simulated together as tensors on one device.

    A subclass gives the physics as batched functions of a float64 state [N, S]:
    `reset_state(u)` from uniforms u [N, reset_draws], `step_state(state, action)` ->
    (next state, reward, terminated), and `observe(state)` -> float32 observations (by
    default the state itself). Keyword arguments of the Gymnasium env (Pendulum's `g`, ...)
    become attributes; the subclass gives their defaults as class attributes.
    This class adds what Gymnasium's wrappers and vector env add around an env: the time
    limit (`truncated`, set as TimeLimit does, even on a terminating step), same-step
    autoreset keeping the true final observation, episode statistics, per-env seeding,
    clipping of Box actions into their bounds, and state_dict() for exact resume.

    step() returns tensors exactly as `envs.TorchVectorEnv.step` does, a `StepInfo` included,
    whose `episodes_ended` is a host bool on the CPU and None on other devices (knowing it
    would need a device read).
    """

    gym_id: str
    reset_draws: int

    def __init__(
        self,
        num_envs: int,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        max_episode_steps: int | None = None,
        render_mode: str | None = None,
        render_env: int = 0,
        **env_kwargs: Any,
    ):
        reference = gym.make(self.gym_id, **env_kwargs)  # spaces, time limit and renderer come from Gymnasium
        self.reference_kwargs = env_kwargs
        for name, value in env_kwargs.items():  # Gymnasium accepted them: they are the env's parameters
            setattr(self, name, value)
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.single_observation_space = reference.observation_space
        self.single_action_space = reference.action_space
        self.observation_space = gym.vector.utils.batch_space(reference.observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(reference.action_space, num_envs)
        self.max_episode_steps = max_episode_steps or reference.spec.max_episode_steps
        self.spec = reference.spec
        self.render_mode, self.render_env = render_mode, render_env
        self.metadata = {
            "autoreset_mode": gym.vector.AutoresetMode.SAME_STEP,
            "render_modes": ["rgb_array"],
            "render_fps": reference.metadata.get("render_fps", 30),
        }
        reference.close()
        self._renderer: gym.Env | None = None
        self.obs_dtype = torch.float32
        self._box_actions = isinstance(self.single_action_space, gym.spaces.Box)
        if self._box_actions:
            self._action_low = torch.as_tensor(self.single_action_space.low, device=self.device)
            self._action_high = torch.as_tensor(self.single_action_space.high, device=self.device)

        n, dev = num_envs, self.device
        self.seed = 0 if seed is None else int(seed)
        self.env_ids = torch.arange(n, device=dev)
        self.resets = torch.zeros(n, dtype=torch.int64, device=dev)  # resets so far, per env: the RNG counter
        self.elapsed = torch.zeros(n, dtype=torch.int64, device=dev)
        self.episode_return = torch.zeros(n, dtype=torch.float64, device=dev)
        self.episode_length = torch.zeros(n, dtype=torch.int64, device=dev)
        self.state = self._fresh_state()

    # -- the physics, per subclass --------------------------------------------------
    def reset_state(self, u: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def step_state(self, state: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def observe(self, state: torch.Tensor) -> torch.Tensor:
        return state.to(torch.float32)

    def set_render_state(self, env: gym.Env, state: np.ndarray) -> None:
        """Put one native state into Gymnasium's env so that its renderer draws it."""
        env.unwrapped.state = state

    # -- the vector env ----------------------------------------------------------------
    def _fresh_state(self) -> torch.Tensor:
        return self.reset_state(uniform(self.seed, self.env_ids, self.resets, self.reset_draws))

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[torch.Tensor, dict]:
        """Reset every env; with `seed`, env i's k-th episode starts from a state drawn from (seed, i, k)."""
        if seed is not None:
            self.seed = int(seed)
            self.resets.zero_()
        self.state = self._fresh_state()
        self.resets += 1
        self.elapsed.zero_()
        self.episode_return.zero_()
        self.episode_length.zero_()
        return self.observe(self.state), {}

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, StepInfo]:
        actions = actions.to(self.device)
        if self._box_actions:
            actions = torch.maximum(torch.minimum(actions.to(torch.float32), self._action_high), self._action_low)
        state, reward, terminated = self.step_state(self.state, actions)
        self.elapsed += 1
        truncated = self.elapsed >= self.max_episode_steps
        done = terminated | truncated
        final_obs = self.observe(state)
        self.episode_return += reward
        self.episode_length += 1
        info = StepInfo(
            final_obs,
            torch.where(done, self.episode_return, 0.0).to(torch.float32),
            torch.where(done, self.episode_length, 0),
            bool(done.any()) if self.device.type == "cpu" else None,
        )
        # Same-step autoreset: every env draws its next start state, the finished ones take it.
        fresh = self._fresh_state()
        self.state = torch.where(done.unsqueeze(1), fresh, state)
        self.resets += done
        keep = ~done
        self.elapsed *= keep
        self.episode_return *= keep
        self.episode_length *= keep
        obs = torch.where(done.unsqueeze(1), self.observe(fresh), final_obs)
        return obs, reward.to(torch.float32), terminated, truncated, info

    def render(self) -> np.ndarray | None:
        """An RGB frame of env `render_env`, drawn by Gymnasium's own renderer."""
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            self._renderer = gym.make(self.gym_id, render_mode="rgb_array", **self.reference_kwargs)
            self._renderer.reset(seed=0)
        self.set_render_state(self._renderer, self.state[self.render_env].cpu().numpy().copy())
        return self._renderer.render()

    def close(self, **kwargs: Any) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def state_dict(self) -> dict[str, Any]:
        """A snapshot (copies: later steps, which update these tensors in place, leave it alone)."""
        tensors = ("state", "resets", "elapsed", "episode_return", "episode_length")
        return {"seed": self.seed, **{name: getattr(self, name).clone() for name in tensors}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed = int(state["seed"])
        for name in ("state", "resets", "elapsed", "episode_return", "episode_length"):
            setattr(self, name, state[name].to(self.device).clone())
