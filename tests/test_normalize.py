"""Running statistics and reward scaling against direct computations."""

import numpy as np
import pytest
import torch

from agents.normalize import ObservationNormalizer, RewardScaler, RunningMeanStd


def test_running_mean_std_matches_numpy_over_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 3)) for n in (5, 17, 40)]
    rms = RunningMeanStd((3,), epsilon=1e-12)
    for batch in batches:
        rms.update(torch.as_tensor(batch))
    allx = np.concatenate(batches)
    assert rms.mean.numpy() == pytest.approx(allx.mean(0), rel=1e-9)
    assert rms.var.numpy() == pytest.approx(allx.var(0), rel=1e-9)


def test_observation_normalizer_standardises_and_clips():
    norm = ObservationNormalizer((2,), clip=1.5)
    norm.update(torch.tensor([[0.0, 10.0], [2.0, 30.0]]))  # mean [1, 20], std [1, 10]
    out = norm(torch.tensor([[1.0, 20.0], [2.0, 100.0]]))
    assert out[0].tolist() == pytest.approx([0.0, 0.0], abs=1e-3)
    assert out[1].tolist() == pytest.approx([1.0, 1.5], abs=1e-3)


def test_reward_scaler_uses_discounted_return_std_and_resets_at_episode_ends():
    gamma = 0.5
    scaler = RewardScaler(num_envs=1, gamma=gamma, epsilon=0.0)
    rewards = torch.tensor([[1.0], [1.0], [1.0], [1.0]])
    dones = torch.tensor([[False], [True], [False], [False]])
    out = scaler(rewards, dones)
    returns = np.array([1.0, 1.5, 1.0, 1.5])  # reset to 0 after the episode end at t=1
    # the running statistics start from one pseudo-sample (count 1e-4) of mean 0, var 1
    count0, mean0, var0 = 1e-4, 0.0, 1.0
    n = len(returns)
    delta = returns.mean() - mean0
    total = count0 + n
    var = (var0 * count0 + returns.var() * n + delta**2 * count0 * n / total) / total
    assert out[:, 0].tolist() == pytest.approx((rewards[:, 0].numpy() / np.sqrt(var)).tolist(), rel=1e-6)
    assert scaler.returns.item() == pytest.approx(1.5)  # carried into the next rollout
