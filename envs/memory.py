"""Memory tasks: envs whose observations hide part of the state, so a policy must remember.

`CartPoleNoVel-v1` is CartPole-v1 with the cart velocity and the pole's angular velocity
removed from the observation (as in Stable-Baselines3-contrib's recurrent PPO examples):
only the cart position and the pole angle are seen, and the velocities must be inferred
from how they change. A feed-forward policy cannot do that; a recurrent one can.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class MaskVelocity(gym.ObservationWrapper):
    """Keep only the given indices of a Box observation."""

    def __init__(self, env: gym.Env, keep: tuple[int, ...]):
        super().__init__(env)
        self.keep = np.asarray(keep)
        space = env.observation_space
        self.observation_space = gym.spaces.Box(space.low[self.keep], space.high[self.keep], dtype=space.dtype)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[self.keep]


def cartpole_no_velocity(**kwargs) -> gym.Env:
    """CartPole-v1 observing (cart position, pole angle) only."""
    return MaskVelocity(gym.make("CartPole-v1", **kwargs), keep=(0, 2))


def register() -> None:
    if "CartPoleNoVel-v1" not in gym.registry:
        gym.register("CartPoleNoVel-v1", entry_point=cartpole_no_velocity)
