"""A Gymnasium vector env that speaks torch tensors on one device.

`TorchVectorEnv` wraps Gymnasium's sync or async vector env (same-step autoreset) and
converts each step's arrays to tensors once, for the whole batch. It keeps terminated and
truncated apart, hands back the true final observation of every finished episode for
bootstrapping, tracks episode returns and lengths of the raw rewards (or takes them from
the sub-envs' `RecordEpisodeStatistics` where a wrapper below it changes rewards or
episode ends, as the Atari training wrappers do), and can save and restore the state of
its sub-environments so that a resumed run continues exactly.
"""

from __future__ import annotations

import pickle
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs.interface import StepInfo
from envs.spaces import host_tensor, pack_obs, torch_dtype


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

    step(actions [N, ...]) returns (obs, reward, terminated, truncated, StepInfo), tensors
    on `device` with leading dimension N (see `envs.interface.StepInfo`); `episodes_ended`
    is always a host bool here.
    With `scores_from_info`, episode_return and episode_length come from the sub-envs'
    RecordEpisodeStatistics (info["episode"]) instead: the true game score and length, which
    with episodic life arrive only when the game is over, not at every lost life.
    """

    def __init__(
        self,
        env: gym.vector.VectorEnv,
        device: torch.device | str = "cpu",
        seed: int | None = None,
        scores_from_info: bool = False,
    ):
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
        self.scores_from_info = scores_from_info
        self._first_seed = seed
        self._episode_return = np.zeros(self.num_envs, dtype=np.float64)
        self._episode_length = np.zeros(self.num_envs, dtype=np.int64)
        # StepInfo's episode_return and episode_length on steps where no episode ended (read-only)
        self._no_episodes = (
            torch.zeros(self.num_envs, device=self.device),
            torch.zeros(self.num_envs, dtype=torch.int64, device=self.device),
        )
        space = self.single_action_space
        self._action_low = self._action_high = None
        if isinstance(space, gym.spaces.Box):
            self._action_low, self._action_high = space.low, space.high
        self._action_offset: np.ndarray | None = None  # Discrete.start: agents act in 0..n-1
        if isinstance(space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete)) and np.any(space.start):
            self._action_offset = np.asarray(space.start)

    def _obs(self, obs: Any) -> torch.Tensor:
        return self._tensor(pack_obs(self.single_observation_space, obs), self.obs_dtype)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[torch.Tensor, dict]:
        if seed is None:
            seed, self._first_seed = self._first_seed, None
        obs, info = self.env.reset(seed=seed, options=options)
        self._episode_return[:] = 0.0
        self._episode_length[:] = 0
        return self._obs(obs), info

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, StepInfo]:
        actions = actions.detach().cpu().numpy()
        if self._action_low is not None:
            # Sampled Gaussian actions may leave the bounds; the env gets them clipped (the
            # agent keeps the unclipped ones for its log-probabilities). np.clip, in two ufuncs.
            actions = np.minimum(np.maximum(actions, self._action_low), self._action_high)
        elif self._action_offset is not None:
            actions = actions + self._action_offset
        obs, reward, terminated, truncated, info = self.env.step(actions)

        done = terminated | truncated
        any_done = bool(done.any())
        episodes_ended = False
        episode_return, episode_length = self._no_episodes
        if self.scores_from_info:
            # with same-step autoreset, the info of the finished episode is the final_info
            final_info = info.get("final_info", {})
            ended = final_info.get("_episode", np.zeros(self.num_envs, dtype=bool)) & done
            if ended.any():
                episodes_ended = True
                returns, lengths = np.zeros(self.num_envs), np.zeros(self.num_envs, dtype=np.int64)
                returns[ended] = final_info["episode"]["r"][ended]
                lengths[ended] = final_info["episode"]["l"][ended]
                episode_return, episode_length = (
                    self._tensor(returns, torch.float32),
                    self._tensor(lengths, torch.int64),
                )
        else:
            self._episode_return += reward
            self._episode_length += 1
            if any_done:
                episodes_ended = True
                episode_return = self._tensor(np.where(done, self._episode_return, 0.0), torch.float32)
                episode_length = self._tensor(np.where(done, self._episode_length, 0), torch.int64)
                self._episode_return[done] = 0.0
                self._episode_length[done] = 0

        space = self.single_observation_space
        packed = pack_obs(space, obs)
        obs_t = self._tensor(packed, self.obs_dtype)
        final_obs = obs_t
        if any_done:
            final = packed.copy()
            for i in np.flatnonzero(info["_final_obs"]):
                one = info["final_obs"][i]
                final[i] = pack_obs(space, {k: [v] for k, v in one.items()} if isinstance(one, dict) else [one])[0]
            final_obs = self._tensor(final, self.obs_dtype)
        return (
            obs_t,
            self._tensor(reward, torch.float32),
            self._tensor(terminated, torch.bool),
            self._tensor(truncated, torch.bool),
            StepInfo(final_obs, episode_return, episode_length, episodes_ended),
        )

    def _tensor(self, array: Any, dtype: torch.dtype) -> torch.Tensor:
        return host_tensor(array, self.device, dtype)

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
