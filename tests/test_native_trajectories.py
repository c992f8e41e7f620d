"""Whole episodes, native vs Gymnasium, from the same start states with the same actions.

The step test (test_native_envs.py) checks single steps from random states; this one
checks that nothing drifts over the length of an episode either (float32 vs float64
arithmetic, for instance, shows up only here)."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs

# Acrobot's RK4 runs through torch's and NumPy's own sin/cos, whose last bits differ; over
# 500 steps of a chaotic system that grows to a few 1e-5. The others agree to float32.
TOLERANCE = {"Acrobot-v1": 1e-3}


def gym_state(env_id: str, state: np.ndarray):
    if env_id == "MountainCar-v0":
        return (state[0], state[1])
    if env_id in ("MountainCarContinuous-v0", "Acrobot-v1"):
        return state.astype(np.float32)  # what Gymnasium's reset stores
    return state.copy()


@pytest.mark.parametrize(
    "env_id", ["Acrobot-v1", "CartPole-v1", "MountainCar-v0", "MountainCarContinuous-v0", "Pendulum-v1"]
)
def test_episodes_agree_with_gymnasium(env_id):
    n = 16
    native = envs.make(env_id, n, backend="native", seed=5)
    native.reset()
    starts = native.state.numpy().copy()
    reference = gym.make(env_id)
    limit = reference.spec.max_episode_steps
    space = reference.action_space
    space.seed(1)
    actions = np.stack([[space.sample() for _ in range(n)] for _ in range(limit)])
    if env_id == "MountainCarContinuous-v0":  # rock back and forth, so that some cars reach the goal
        actions = np.sign(np.sin(np.arange(limit) / 15))[:, None, None].repeat(n, 1).astype(np.float32)
    steps = [native.step(torch.as_tensor(actions[t])) for t in range(limit)]

    tolerance = TOLERANCE.get(env_id, 1e-5)
    ended = 0
    for i in range(n):
        reference.reset(seed=0)
        reference.unwrapped.state = gym_state(env_id, starts[i])
        for t in range(limit):
            obs, reward, terminated, truncated, _ = reference.step(actions[t, i])
            _, native_reward, native_term, native_trunc, info = steps[t]
            np.testing.assert_allclose(info.final_obs[i].numpy(), obs, rtol=0, atol=tolerance)
            assert native_reward[i].item() == pytest.approx(reward, abs=max(tolerance, 1e-5))
            assert (bool(native_term[i]), bool(native_trunc[i])) == (terminated, truncated), (i, t)
            if terminated or truncated:
                ended += 1
                break
    assert ended == n
