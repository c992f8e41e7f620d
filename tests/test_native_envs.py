"""Native envs against Gymnasium's: step-for-step fidelity, resets, autoreset, API checks."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from envs.native import NATIVE_ENVS
from envs.native.rng import splitmix64, uniform

TRANSITIONS = 100_000  # per env


def random_states(env_id: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """States covering each env's regimes: terminal regions, clamps, wraps, fast spins."""
    u = lambda low, high: rng.uniform(low, high, n)  # noqa: E731
    if env_id == "CartPole-v1":
        return np.stack([u(-2.6, 2.6), u(-3, 3), u(-0.25, 0.25), u(-3.5, 3.5)], 1)
    if env_id == "Pendulum-v1":
        return np.stack([u(-3 * math.pi, 3 * math.pi), u(-8, 8)], 1)
    if env_id in ("MountainCar-v0", "MountainCarContinuous-v0"):
        states = np.stack([u(-1.2, 0.6), u(-0.07, 0.07)], 1)
        states[: n // 20, 0] = -1.2  # at the left wall, where the velocity is zeroed
        states[n // 20 : n // 10, 0] = rng.uniform(0.40, 0.5, n // 20)  # next to the goal
        states[n // 20 : n // 10, 1] = rng.uniform(0.0, 0.07, n // 20)
        if env_id == "MountainCarContinuous-v0":
            states = states.astype(np.float32).astype(np.float64)  # Gymnasium keeps this state in float32
        return states
    if env_id == "Acrobot-v1":
        return np.stack(
            [u(-math.pi, math.pi), u(-math.pi, math.pi), u(-4 * math.pi, 4 * math.pi), u(-9 * math.pi, 9 * math.pi)], 1
        )
    raise KeyError(env_id)


def gym_state(env_id: str, state: np.ndarray):
    if env_id == "MountainCar-v0":
        return (state[0], state[1])
    if env_id == "MountainCarContinuous-v0":
        return state.astype(np.float32)
    return state.copy()


@pytest.mark.parametrize("env_id", sorted(NATIVE_ENVS))
def test_steps_agree_with_gymnasium(env_id):
    rng = np.random.default_rng(0)
    n = TRANSITIONS
    reference = gym.make(env_id)
    reference.reset(seed=0)
    limit = reference.spec.max_episode_steps
    states = random_states(env_id, n, rng)
    elapsed = rng.integers(0, limit, n)
    elapsed[: n // 10] = limit - 1  # a tenth of the steps hit the time limit
    space = reference.action_space
    space.seed(0)
    actions = np.stack([space.sample() for _ in range(n)])

    native = envs.make(env_id, n, backend="native", seed=0)
    native.reset()
    native.load_state_dict(
        {**native.state_dict(), "state": torch.as_tensor(states), "elapsed": torch.as_tensor(elapsed)}
    )
    _, reward, terminated, truncated, info = native.step(torch.as_tensor(actions))

    obs_ref = np.empty((n, *reference.observation_space.shape), np.float32)
    rew_ref, term_ref, trunc_ref = np.empty(n), np.empty(n, bool), np.empty(n, bool)
    for i in range(n):
        reference.unwrapped.state = gym_state(env_id, states[i])
        if env_id == "CartPole-v1":
            reference.unwrapped.steps_beyond_terminated = None
        reference._elapsed_steps = int(elapsed[i])  # the TimeLimit wrapper's counter
        obs_ref[i], rew_ref[i], term_ref[i], trunc_ref[i], _ = reference.step(actions[i])

    assert np.array_equal(terminated.numpy(), term_ref), np.flatnonzero(terminated.numpy() != term_ref)[:10]
    assert np.array_equal(truncated.numpy(), trunc_ref)
    np.testing.assert_allclose(info.final_obs.numpy(), obs_ref, rtol=0, atol=1e-5)
    np.testing.assert_allclose(reward.numpy(), rew_ref, rtol=0, atol=1e-5)
    assert term_ref.any() or env_id == "Pendulum-v1"  # the sample reached terminal states
    assert trunc_ref.any() and (~(term_ref | trunc_ref)).any()


@pytest.mark.parametrize("env_id", sorted(NATIVE_ENVS))
def test_reset_distribution_matches_gymnasium_in_range(env_id):
    native = envs.make(env_id, 20_000, backend="native", seed=1)
    obs, _ = native.reset()
    reference = gym.make(env_id)
    ref = np.stack([reference.reset(seed=s)[0] for s in range(2_000)])
    low, high = ref.min(0), ref.max(0)
    span = np.maximum(high - low, 1e-6)
    obs = obs.numpy()
    assert (obs.min(0) >= low - 0.02 * span).all() and (obs.max(0) <= high + 0.02 * span).all()
    assert (obs.min(0) <= low + 0.02 * span).all() and (obs.max(0) >= high - 0.02 * span).all()
    np.testing.assert_allclose(obs.mean(0), ref.mean(0), atol=0.05 * span.max())
    assert native.observation_space.contains(obs)


def test_autoreset_keeps_the_final_obs_and_truncates_at_the_limit():
    env = envs.make("CartPole-v1", 2, backend="native", seed=3, max_episode_steps=5)
    start, _ = env.reset()
    for _ in range(5):
        obs, reward, terminated, truncated, info = env.step(torch.tensor([0, 1]))
    assert truncated.tolist() == [True, True] and not terminated.any()
    assert not torch.equal(info.final_obs, obs)
    assert info.episode_return.tolist() == [5.0, 5.0] and info.episode_length.tolist() == [5, 5]
    assert not torch.equal(obs, start)  # each env's second episode starts elsewhere
    assert (obs.abs() <= 0.05).all()  # from the reset distribution


def test_termination_then_fresh_episode():
    env = envs.make("CartPole-v1", 1, backend="native", seed=0)
    env.reset()
    steps = 0
    while True:
        steps += 1
        obs, _, terminated, truncated, info = env.step(torch.tensor([1]))
        if terminated.item():
            break
    assert not truncated.item() and info.episode_length.item() == steps
    assert info.final_obs[0, 2].abs() > 0.2 or info.final_obs[0, 0].abs() > 2.4  # the terminal state
    assert (obs.abs() <= 0.05).all()


def test_same_seed_same_episodes_and_state_dict_round_trip():
    def run(env, n):
        gen = torch.Generator().manual_seed(0)
        return [env.step(torch.randint(0, 2, (64,), generator=gen))[0] for _ in range(n)]

    a = envs.make("CartPole-v1", 64, backend="native", seed=11)
    a.reset()
    b = envs.make("CartPole-v1", 64, backend="native", seed=11)
    b.reset()
    assert all(torch.equal(x, y) for x, y in zip(run(a, 300), run(b, 300), strict=True))
    c = envs.make("CartPole-v1", 64, backend="native", seed=12)
    assert not torch.equal(c.reset()[0], envs.make("CartPole-v1", 64, backend="native", seed=11).reset()[0])

    state = {k: v.clone() if torch.is_tensor(v) else v for k, v in a.state_dict().items()}
    later = run(a, 100)
    b.load_state_dict(state)
    assert all(torch.equal(x, y) for x, y in zip(later, run(b, 100), strict=True))


def test_box_actions_are_clipped_like_the_gym_backend():
    native = envs.make("Pendulum-v1", 1, backend="native", seed=0)
    native.reset()
    gym_backend = envs.make("Pendulum-v1", 1, backend="gym", seed=0)
    gym_backend.reset()
    native.load_state_dict({**native.state_dict(), "state": torch.tensor([[1.0, 0.5]], dtype=torch.float64)})
    gym_backend.env.envs[0].unwrapped.state = np.array([1.0, 0.5])
    for action in (5.0, -7.0):
        _, r_native, *_ = native.step(torch.tensor([[action]]))
        _, r_gym, *_ = gym_backend.step(torch.tensor([[action]]))
        assert r_native.item() == pytest.approx(r_gym.item(), abs=1e-5)


def test_unknown_native_id_lists_the_native_ones():
    with pytest.raises(
        envs.EnvError,
        match="'LunarLander-v3' has no native version; native envs: Acrobot-v1, "
        "CartPole-v1, MountainCar-v0, MountainCarContinuous-v0, Pendulum-v1",
    ):
        envs.make("LunarLander-v3", 4, backend="native")


def test_counter_rng_is_splitmix64_and_uniform():
    def reference(x):  # SplitMix64 in Python integers
        mask = (1 << 64) - 1
        x = (x + 0x9E3779B97F4A7C15) & mask
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
        return x ^ (x >> 31)

    inputs = [0, 1, 12345, 2**62 + 7, -5]
    got = splitmix64(torch.tensor(inputs, dtype=torch.int64)).tolist()
    assert [g & ((1 << 64) - 1) for g in got] == [reference(i & ((1 << 64) - 1)) for i in inputs]
    u = uniform(7, torch.arange(100_000), torch.zeros(100_000, dtype=torch.int64), 2)
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.003 and abs(u.var().item() - 1 / 12) < 0.002
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.01


class OneEnvView(gym.Env):
    """One native env seen as a plain gym.Env, for Gymnasium's own checker."""

    def __init__(self, env_id: str):
        self.venv = envs.make(env_id, 1, backend="native", render_mode="rgb_array")
        self.observation_space = self.venv.single_observation_space
        self.action_space = self.venv.single_action_space
        self.metadata = {"render_modes": ["rgb_array"], "render_fps": self.venv.metadata["render_fps"]}
        self.render_mode = "rgb_array"

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        obs, _ = self.venv.reset(seed=seed)
        return obs[0].numpy(), {}

    def step(self, action):
        _, reward, terminated, truncated, info = self.venv.step(torch.as_tensor(np.asarray(action)).unsqueeze(0))
        return info.final_obs[0].numpy(), float(reward[0]), bool(terminated[0]), bool(truncated[0]), {}

    def render(self):
        return self.venv.render()


@pytest.mark.parametrize("env_id", sorted(NATIVE_ENVS))
def test_gymnasium_env_checker_passes(env_id):
    from gymnasium.utils.env_checker import check_env

    env = OneEnvView(env_id)
    check_env(env)
    frame = env.render()
    assert frame.ndim == 3 and frame.shape[2] == 3 and frame.std() > 0


def test_mountain_car_continuous_reaches_the_goal_in_float32_as_gymnasium_does():
    # Found in review: in float64 this car stops just short of 0.45; Gymnasium, in float32, arrives.
    state = np.array([0.42223492, 0.027764916], dtype=np.float32)
    action = np.array([0.4991498], dtype=np.float32)
    reference = gym.make("MountainCarContinuous-v0")
    reference.reset(seed=0)
    reference.unwrapped.state = state.copy()
    _, expected_reward, expected_terminated, *_ = reference.step(action)
    native = envs.make("MountainCarContinuous-v0", 1, backend="native", seed=0)
    native.reset()
    native.load_state_dict({**native.state_dict(), "state": torch.as_tensor(state, dtype=torch.float64)[None]})
    _, reward, terminated, *_ = native.step(torch.as_tensor(action)[None])
    assert expected_terminated and terminated.item()
    assert reward.item() == pytest.approx(expected_reward, abs=1e-5)
