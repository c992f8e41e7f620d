"""The tensor vector env: flags, final observations, episode statistics, ids, snapshots."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs


def test_tensors_dtypes_and_spaces():
    env = envs.make("CartPole-v1", num_envs=3, seed=0)
    obs, _ = env.reset()
    assert obs.shape == (3, 4) and obs.dtype == torch.float32
    assert env.single_observation_space == gym.make("CartPole-v1").observation_space
    obs, reward, terminated, truncated, info = env.step(torch.zeros(3, dtype=torch.int64))
    assert reward.dtype == torch.float32 and terminated.dtype == torch.bool and truncated.dtype == torch.bool
    assert info.final_obs.shape == (3, 4)
    env.close()


def test_seeding_matches_gymnasium_env_by_env():
    env = envs.make("CartPole-v1", num_envs=2, seed=42)
    obs, _ = env.reset()
    for i in range(2):
        expected, _ = gym.make("CartPole-v1").reset(seed=42 + i)
        assert np.allclose(obs[i].numpy(), expected)


def test_truncation_is_separate_and_final_obs_is_the_true_last_state():
    env = envs.make("CartPole-v1", num_envs=2, seed=7, max_episode_steps=5)
    single = gym.make("CartPole-v1", max_episode_steps=5)
    single_obs, _ = single.reset(seed=7)
    env.reset()
    for t in range(5):
        obs, reward, terminated, truncated, info = env.step(torch.tensor([t % 2, 0]))
        single_obs, _, single_term, single_trunc, _ = single.step(t % 2)
        assert info.episodes_ended is (t == 4)  # the host's word for "episode_length has a nonzero"
    assert truncated.tolist() == [True, True] and terminated.tolist() == [False, False]
    assert np.allclose(info.final_obs[0].numpy(), single_obs)  # the state the time limit cut off
    assert not np.allclose(obs[0].numpy(), single_obs)  # obs is already the next episode's first
    assert info.episode_return.tolist() == [5.0, 5.0]
    assert info.episode_length.tolist() == [5, 5]


def test_termination_reported_without_truncation():
    env = envs.make("toy_envs:Countdown-v0", num_envs=1, seed=0, length=3)
    env.reset()
    flags = [env.step(torch.tensor([0]))[2:4] for _ in range(3)]
    assert [bool(t) for t, _ in flags] == [False, False, True]
    assert not any(bool(tr) for _, tr in flags)


def test_unknown_ids_and_backends_raise_env_error():
    with pytest.raises(envs.EnvError, match="unknown environment id 'NoSuchEnv-v0'"):
        envs.make("NoSuchEnv-v0")
    with pytest.raises(envs.EnvError, match="cannot import module 'no_such_module'"):
        envs.make("no_such_module:Env-v0")
    with pytest.raises(envs.EnvError, match="unknown backend"):
        envs.make("CartPole-v1", backend="warp")


def test_user_env_by_module_id():
    env = envs.make("toy_envs:Countdown-v0", num_envs=2, seed=0)
    obs, _ = env.reset()
    assert obs.tolist() == [[0.0], [0.0]]


def test_async_backend_gives_the_same_transitions_as_sync():
    actions = [torch.tensor([[0.5], [-1.0]]) * (t % 3) for t in range(30)]
    results = []
    for backend in ("gym", "async"):
        env = envs.make("Pendulum-v1", num_envs=2, backend=backend, seed=5)
        env.reset()
        results.append([env.step(a)[:2] for a in actions])
        env.close()
    for (obs_a, rew_a), (obs_b, rew_b) in zip(*results, strict=True):
        assert torch.equal(obs_a, obs_b) and torch.equal(rew_a, rew_b)


@pytest.mark.parametrize("backend", ["gym", "async"])
def test_state_dict_round_trip_continues_identically(backend):
    env = envs.make("CartPole-v1", num_envs=3, backend=backend, seed=1)
    env.reset()
    gen = torch.Generator().manual_seed(0)
    for _ in range(7):
        env.step(torch.randint(0, 2, (3,), generator=gen))
    state = env.state_dict()
    actions = [torch.randint(0, 2, (3,), generator=gen) for _ in range(40)]
    expected = [env.step(a) for a in actions]
    env.close()

    other = envs.make("CartPole-v1", num_envs=3, backend=backend, seed=999)
    other.reset()
    other.load_state_dict(state)
    for a, (obs, _, term, trunc, info) in zip(actions, expected, strict=True):
        obs2, _, term2, trunc2, info2 = other.step(a)
        assert torch.equal(obs, obs2) and torch.equal(term, term2) and torch.equal(trunc, trunc2)
        assert torch.equal(info.episode_return, info2.episode_return)
    other.close()


def test_box_actions_are_clipped_to_the_bounds():
    env = envs.make("Pendulum-v1", num_envs=1, seed=0)
    reference = gym.make("Pendulum-v1")
    env.reset()
    reference.reset(seed=0)
    _, reward, *_ = env.step(torch.tensor([[10.0]]))
    _, expected, *_ = reference.step(np.array([2.0], np.float32))
    assert reward.item() == pytest.approx(expected, rel=1e-6)
