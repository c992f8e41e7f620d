"""GAE and returns against values worked out by hand."""

import pytest
import torch

from agents.advantages import compute_gae, explained_variance, standardize


def test_gae_with_termination_and_truncation_in_one_segment():
    # gamma 0.9, lambda 0.8; env 0 terminates at t=1 and is truncated at t=3, env 1 never ends.
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0], [4.0, 1.0], [5.0, 1.0]])
    values = torch.tensor([[0.5, 0.0], [1.0, 0.0], [1.5, 0.0], [2.0, 0.0], [2.5, 0.0]])
    # V(s'_t): obs[t + 1] normally; t=1 is terminal (the 7.0 must be ignored); t=3 is the
    # truncated episode's true final state, V = 3.0 (not V(obs[4]) = 2.5, the next reset).
    next_values = torch.tensor([[1.0, 0.0], [7.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]])
    terminated = torch.tensor([[False, False], [True, False], [False, False], [False, False], [False, False]])
    truncated = torch.tensor([[False, False], [False, False], [False, False], [True, False], [False, False]])

    adv, ret = compute_gae(rewards, values, next_values, terminated, truncated, gamma, lam)

    # env 0 by hand: deltas d = r + 0.9 * V' * (1 - term) - V = [1.4, 1.0, 3.3, 4.7, 6.1];
    # A_t = d_t + 0.72 * (1 - done_t) * A_{t+1}, cut at t=1 and t=3.
    expected_0 = [1.4 + 0.72 * 1.0, 1.0, 3.3 + 0.72 * 4.7, 4.7, 6.1]
    # env 1: every delta is 1, A_t = 1 + 0.72 A_{t+1}.
    expected_1 = [2.88038656, 2.611648, 2.2384, 1.72, 1.0]
    assert adv[:, 0].tolist() == pytest.approx(expected_0)
    assert adv[:, 1].tolist() == pytest.approx(expected_1)
    # returns = advantages + values
    assert ret[:, 0].tolist() == pytest.approx([2.62, 2.0, 8.184, 6.7, 8.6])


def test_lambda_one_gives_bootstrapped_n_step_returns():
    gamma = 0.5
    rewards = torch.tensor([[1.0], [2.0], [4.0]])
    values = torch.zeros(3, 1)
    last_value = 8.0
    next_values = torch.tensor([[0.0], [0.0], [last_value]])
    no = torch.zeros(3, 1, dtype=torch.bool)
    _, ret = compute_gae(rewards, values, next_values, no, no, gamma, 1.0)
    # R_2 = 4 + 0.5 * 8 = 8; R_1 = 2 + 0.5 * 8 = 6; R_0 = 1 + 0.5 * 6 = 4
    assert ret[:, 0].tolist() == pytest.approx([4.0, 6.0, 8.0])


def test_lambda_zero_is_one_step_td():
    rewards = torch.tensor([[1.0], [1.0]])
    values = torch.tensor([[0.25], [0.5]])
    next_values = torch.tensor([[0.5], [2.0]])
    no = torch.zeros(2, 1, dtype=torch.bool)
    adv, _ = compute_gae(rewards, values, next_values, no, no, 0.9, 0.0)
    assert adv[:, 0].tolist() == pytest.approx([1 + 0.9 * 0.5 - 0.25, 1 + 0.9 * 2.0 - 0.5])


def test_standardize_and_explained_variance():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    z = standardize(x)
    assert z.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert z.std().item() == pytest.approx(1.0, abs=1e-6)
    assert explained_variance(x, x).item() == pytest.approx(1.0)
    assert explained_variance(torch.full_like(x, x.mean().item()), x).item() == pytest.approx(0.0)
