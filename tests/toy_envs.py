"""Small environments registered for tests; use them as `toy_envs:NAME-v0`."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class MultiBinaryActionEnv(gym.Env):
    """An env whose MultiBinary action space no on-policy agent here acts in."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.MultiBinary(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, False, False, {}


class CountdownEnv(gym.Env):
    """Observation is the step count; reward 1 per step; terminates after `length` steps."""

    observation_space = gym.spaces.Box(0.0, 100.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length: int = 4):
        self.length, self.t = length, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([float(self.t)], np.float32), 1.0, self.t >= self.length, False, {}


gym.register("MultiBinaryAction-v0", entry_point=MultiBinaryActionEnv)
gym.register("Countdown-v0", entry_point=CountdownEnv, max_episode_steps=100)
