"""A Gymnasium vector env that speaks torch tensors on one device.

`TorchVectorEnv` wraps Gymnasium's sync or async vector env (same-step autoreset) and
converts each step's arrays to tensors once, for the whole batch. It keeps terminated and
truncated apart, hands back the true final observation of every finished episode for
bootstrapping, tracks episode returns and lengths of the raw rewards, and can save and
restore the state of its sub-environments so that a resumed run continues exactly.
"""

from __future__ import annotations

import pickle
from typing import Any

import gymnasium as gym
import numpy as np
import torch


def torch_dtype(space: gym.Space) -> torch.dtype:
    """The tensor dtype used for values of `space`: float32 for float boxes, int64 for
    discrete values, the box's own dtype otherwise (uint8 images stay uint8)."""
    if isinstance(space, gym.spaces.Discrete):
        return torch.int64
    if isinstance(space, gym.spaces.Box):
        if np.issubdtype(space.dtype, np.floating):
            return torch.float32
        return torch.from_numpy(np.zeros((), dtype=space.dtype)).dtype
    raise TypeError(f"no tensor dtype for space {space}")


class SnapshotWrapper(gym.Wrapper):
    """Outermost wrapper of each sub-env: pickles and restores the whole wrapped env,
    through the vector env's `call`, so it works in async worker processes too."""

    def __init__(self, env: gym.Env, index: int):
        super().__init__(env)
        self.index = index

    def drl_get_state(self) -> bytes:
        return pickle.dumps(self.env)

    def drl_set_state(self, states: tuple[bytes, ...]) -> None:
        self.env = pickle.loads(states[self.index])


class TorchVectorEnv(gym.vector.VectorEnv):
    """Batched env with tensor inputs and outputs; see the module docstring.

    step(actions [N, ...]) returns (obs, reward, terminated, truncated, info), tensors
    on `device` with leading dimension N. `info` holds:
      final_obs       [N, *obs] the observation each env reached this step: the final one
                      where an episode ended (bootstrap truncations from it), else obs.
      episode_return  [N] float, the raw return of episodes that ended this step, else 0.
      episode_length  [N] int, their lengths, else 0.
    """

    def __init__(self, env: gym.vector.VectorEnv, device: torch.device | str = "cpu", seed: int | None = None):
        if env.metadata.get("autoreset_mode") != gym.vector.AutoresetMode.SAME_STEP:
            raise ValueError("TorchVectorEnv needs a vector env with autoreset_mode=SAME_STEP")
        self.env = env
        self.device = torch.device(device)
        self.num_envs = env.num_envs
        self.single_observation_space = env.single_observation_space
        self.single_action_space = env.single_action_space
        self.observation_space = env.observation_space
        self.action_space = env.action_space
        self.metadata = env.metadata
        self.render_mode = env.render_mode
        self.spec = env.spec
        self.obs_dtype = torch_dtype(self.single_observation_space)
        self._first_seed = seed
        self._episode_return = np.zeros(self.num_envs, dtype=np.float64)
        self._episode_length = np.zeros(self.num_envs, dtype=np.int64)
        space = self.single_action_space
        self._action_low = self._action_high = None
        if isinstance(space, gym.spaces.Box):
            self._action_low, self._action_high = space.low, space.high
        self._action_offset = int(space.start) if isinstance(space, gym.spaces.Discrete) else 0

    def _obs(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(obs).to(self.device, self.obs_dtype)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[torch.Tensor, dict]:
        if seed is None:
            seed, self._first_seed = self._first_seed, None
        obs, info = self.env.reset(seed=seed, options=options)
        self._episode_return[:] = 0.0
        self._episode_length[:] = 0
        return self._obs(obs), info

    def step(self, actions: torch.Tensor):
        actions = actions.detach().cpu().numpy()
        if self._action_low is not None:
            # Sampled Gaussian actions may leave the bounds; the env gets them clipped (the
            # agent keeps the unclipped ones for its log-probabilities).
            actions = np.clip(actions, self._action_low, self._action_high)
        elif self._action_offset:
            actions = actions + self._action_offset
        obs, reward, terminated, truncated, info = self.env.step(actions)

        self._episode_return += reward
        self._episode_length += 1
        done = terminated | truncated
        episode_return = np.where(done, self._episode_return, 0.0)
        episode_length = np.where(done, self._episode_length, 0)
        self._episode_return[done] = 0.0
        self._episode_length[done] = 0

        obs_t = self._obs(obs)
        final_obs = obs_t
        if done.any():
            final = obs.copy()
            mask = info["_final_obs"]
            final[mask] = np.stack(info["final_obs"][mask])
            final_obs = self._obs(final)
        out_info = {
            "final_obs": final_obs,
            "episode_return": torch.from_numpy(episode_return).to(self.device, torch.float32),
            "episode_length": torch.from_numpy(episode_length).to(self.device),
        }
        return (
            obs_t,
            torch.from_numpy(np.asarray(reward, dtype=np.float32)).to(self.device),
            torch.from_numpy(terminated).to(self.device),
            torch.from_numpy(truncated).to(self.device),
            out_info,
        )

    def render(self):
        return self.env.render()

    def close(self, **kwargs: Any) -> None:
        self.env.close(**kwargs)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue these episodes exactly: each sub-env pickled
        (its physics state, RNG and time-limit counter) and the episode statistics.
        Raises TypeError or pickle.PicklingError for envs that cannot be pickled."""
        return {
            "envs": list(self.env.call("drl_get_state")),
            "episode_return": self._episode_return.tolist(),
            "episode_length": self._episode_length.tolist(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.env.call("drl_set_state", tuple(state["envs"]))
        self._episode_return[:] = state["episode_return"]
        self._episode_length[:] = state["episode_length"]
