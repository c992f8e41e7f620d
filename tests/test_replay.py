"""Replay storage, n-step returns and the sum-tree against values worked out by hand."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.advantages import nstep_returns
from runners.replay import ReplayBuffer, SumTree

GAMMA = 0.9
OBS_SPACE = gym.spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float32)
ACTION_SPACE = gym.spaces.Discrete(3)
FINAL = 1000  # final observations (before an autoreset) are FINAL + obs of their step


# ----------------------------------------------------------------------------- nstep_returns
def test_nstep_returns_on_hand_written_windows():
    # four windows of n = 3 steps, gamma 0.9
    rewards = torch.tensor(
        [
            [1.0, 2.0, 4.0],  # no episode end
            [1.0, 2.0, 4.0],  # terminated at step 1: step 2 is the next episode
            [3.0, 5.0, 7.0],  # truncated at step 0: bootstrap from its final observation
            [2.0, 10.0, 100.0],  # truncated at step 1, step 2 of the next episode terminates
        ]
    )
    terminated = torch.tensor(
        [[False, False, False], [False, True, False], [False, False, False], [False, False, True]]
    )
    truncated = torch.tensor([[False, False, False], [False, False, False], [True, False, False], [False, True, False]])

    returns, discounts, last = nstep_returns(rewards, terminated, truncated, GAMMA)

    assert returns.tolist() == pytest.approx([1 + 0.9 * 2 + 0.81 * 4, 1 + 0.9 * 2, 3.0, 2 + 0.9 * 10])
    assert returns.tolist() == pytest.approx([6.04, 2.8, 3.0, 11.0])
    assert discounts.tolist() == pytest.approx([0.729, 0.0, 0.9, 0.81])
    assert last.dtype == torch.int64
    assert last.tolist() == [2, 1, 0, 1]


def test_nstep_returns_with_one_step_and_done_at_the_last_step():
    rewards = torch.tensor([[5.0], [5.0], [5.0]])
    terminated = torch.tensor([[False], [True], [False]])
    truncated = torch.tensor([[False], [False], [True]])
    returns, discounts, last = nstep_returns(rewards, terminated, truncated, GAMMA)
    assert returns.tolist() == pytest.approx([5.0, 5.0, 5.0])
    assert discounts.tolist() == pytest.approx([0.9, 0.0, 0.9])
    assert last.tolist() == [0, 0, 0]

    # an end at the last step of the window changes nothing but the discount
    rewards = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    terminated = torch.tensor([[False, True], [False, False]])
    truncated = torch.tensor([[False, False], [False, True]])
    returns, discounts, last = nstep_returns(rewards, terminated, truncated, GAMMA)
    assert returns.tolist() == pytest.approx([1.9, 1.9])
    assert discounts.tolist() == pytest.approx([0.0, 0.81])
    assert last.tolist() == [1, 1]


# ----------------------------------------------------------------------------- scripted steps
def scripted_steps(T: int, num_envs: int, ends: dict[tuple[int, int], str]) -> list[dict]:
    """T vector-env steps: obs = t * 10 + env, reward = t + 1 + env / 100 (unique per step),
    action = (t + env) % 3; `ends[(t, env)]` is "term" or "trunc". next_obs is the next row's
    obs, or FINAL + obs for a step that ended an episode (the reset obs is the next row's)."""
    steps = []
    for t in range(T):
        obs = [t * 10 + e for e in range(num_envs)]
        term = [ends.get((t, e)) == "term" for e in range(num_envs)]
        trunc = [ends.get((t, e)) == "trunc" for e in range(num_envs)]
        nxt = [FINAL + obs[e] if term[e] or trunc[e] else (t + 1) * 10 + e for e in range(num_envs)]
        steps.append(
            {
                "obs": obs,
                "actions": [(t + e) % 3 for e in range(num_envs)],
                "rewards": [t + 1 + e / 100 for e in range(num_envs)],
                "terminated": term,
                "truncated": trunc,
                "next_obs": nxt,
            }
        )
    return steps


def add_steps(buffer: ReplayBuffer, steps: list[dict]) -> None:
    for s in steps:
        buffer.add(
            torch.tensor(s["obs"], dtype=torch.float32).unsqueeze(1),
            torch.tensor(s["actions"], dtype=torch.int64),
            torch.tensor(s["rewards"], dtype=torch.float32),
            torch.tensor(s["terminated"]),
            torch.tensor(s["truncated"]),
            torch.tensor(s["next_obs"], dtype=torch.float32).unsqueeze(1),
        )


def expected_target(steps: list[dict], t: int, e: int, n: int, gamma: float) -> tuple[float, float, float]:
    """(reward sum, discount, next_obs) of the n-step window starting at step t of env e,
    walked step by step from the script, cut at the first episode end."""
    total = 0.0
    for k in range(n):
        s = steps[t + k]
        total += gamma**k * s["rewards"][e]
        if s["terminated"][e]:
            return total, 0.0, s["next_obs"][e]
        if s["truncated"][e]:
            return total, gamma ** (k + 1), s["next_obs"][e]
    return total, gamma**n, steps[t + n - 1]["next_obs"][e]


def make_buffer(capacity: int, n_step: int, num_envs: int = 2, **kwargs) -> ReplayBuffer:
    return ReplayBuffer(capacity, num_envs, OBS_SPACE, ACTION_SPACE, "cpu", n_step=n_step, gamma=GAMMA, **kwargs)


def check_batch(batch, steps: list[dict], valid_t: range, n: int, num_envs: int = 2) -> set[tuple[int, int]]:
    """Every sampled transition against the script; returns the (t, env) pairs seen."""
    obs = batch.obs.squeeze(1).long().tolist()
    seen = set()
    for i, o in enumerate(obs):
        t, e = divmod(o, 10)
        assert t in valid_t, f"sampled step {t} outside {valid_t}"
        seen.add((t, e))
        reward, discount, next_obs = expected_target(steps, t, e, n, GAMMA)
        assert batch.actions[i].item() == (t + e) % 3
        assert batch.rewards[i].item() == pytest.approx(reward, rel=1e-6)
        assert batch.discounts[i].item() == pytest.approx(discount, rel=1e-6)
        assert batch.next_obs[i, 0].item() == next_obs
        assert batch.indices[i].item() % num_envs == e
    return seen


# ----------------------------------------------------------------------------- uniform sampling
@pytest.mark.parametrize("n_step", [1, 3])
def test_uniform_sampling_matches_the_script(n_step):
    T = 8
    ends = {(2, 0): "term", (4, 1): "trunc", (6, 0): "trunc"}
    steps = scripted_steps(T, 2, ends)
    buffer = make_buffer(capacity=2 * 10, n_step=n_step)  # 10 rows: nothing is overwritten
    assert buffer.rows == 10
    assert len(buffer) == 0
    with pytest.raises(ValueError):
        buffer.sample(4)
    for filled, s in enumerate(steps, start=1):
        add_steps(buffer, [s])
        assert len(buffer) == max(0, filled - n_step + 1) * 2

    batch = buffer.sample(4096, generator=torch.Generator().manual_seed(0))
    assert batch.obs.shape == (4096, 1) and batch.next_obs.shape == (4096, 1)
    assert batch.rewards.shape == batch.discounts.shape == batch.weights.shape == (4096,)
    assert torch.equal(batch.weights, torch.ones(4096))
    valid = range(0, T - n_step + 1)  # the newest n - 1 rows are not sampled
    seen = check_batch(batch, steps, valid, n_step)
    assert seen == {(t, e) for t in valid for e in range(2)}  # and everything else is


def test_uniform_nstep_targets_by_hand():
    """A few n = 3 targets of the scripted sequence written out by hand."""
    steps = scripted_steps(8, 2, {(2, 0): "term", (4, 1): "trunc"})
    buffer = make_buffer(capacity=20, n_step=3)
    add_steps(buffer, steps)
    batch = buffer.sample(4096, generator=torch.Generator().manual_seed(1))
    by_obs = {int(o): i for i, o in enumerate(batch.obs.squeeze(1).tolist())}
    cases = {
        # obs: (rewards, discount, next_obs)
        0: (1 + 0.9 * 2 + 0.81 * 3, 0.0, 1020),  # env 0 from t=0: terminated at t=2
        10: (2 + 0.9 * 3, 0.0, 1020),  # env 0 from t=1: terminated at t=2 (second step)
        20: (3.0, 0.0, 1020),  # env 0 from t=2: terminated at once
        30: (4 + 0.9 * 5 + 0.81 * 6, 0.729, 60),  # env 0 from t=3: a whole window
        21: (3.01 + 0.9 * 4.01 + 0.81 * 5.01, 0.729, 1041),  # env 1 from t=2: truncated at t=4, third step
        31: (4.01 + 0.9 * 5.01, 0.81, 1041),  # env 1 from t=3: truncated at t=4, second step
        41: (5.01, 0.9, 1041),  # env 1 from t=4: truncated at once, bootstraps from the final obs
        51: (6.01 + 0.9 * 7.01 + 0.81 * 8.01, 0.729, 81),  # env 1 from t=5: the next episode
    }
    for obs, (reward, discount, next_obs) in cases.items():
        i = by_obs[obs]
        assert batch.rewards[i].item() == pytest.approx(reward, rel=1e-6)
        assert batch.discounts[i].item() == pytest.approx(discount, rel=1e-6)
        assert batch.next_obs[i, 0].item() == next_obs
    assert not ({60, 61, 70, 71} & by_obs.keys())  # the newest two rows


# ----------------------------------------------------------------------------- circular overwrite
@pytest.mark.parametrize("n_step", [1, 3])
@pytest.mark.parametrize("T", [5, 6, 7, 9, 11, 13, 14])
def test_circular_overwrite_keeps_windows_chronological(n_step, T):
    rows = 5
    ends = {(3, 0): "term", (8, 1): "trunc", (10, 0): "trunc", (12, 1): "term"}
    steps = scripted_steps(T, 2, ends)
    buffer = make_buffer(capacity=2 * rows, n_step=n_step)
    assert buffer.rows == rows
    add_steps(buffer, steps)
    assert buffer.filled == rows
    assert len(buffer) == (rows - n_step + 1) * 2

    batch = buffer.sample(2048, generator=torch.Generator().manual_seed(T))
    # only the last `rows` steps are held; of them the newest n - 1 are not sampled. The
    # rewards encode every step of the window, so a window reading an overwritten row (or one
    # wrapped onto the oldest row) would not match the script.
    valid = range(T - rows, T - n_step + 1)
    seen = check_batch(batch, steps, valid, n_step)
    assert seen == {(t, e) for t in valid for e in range(2)}


# ----------------------------------------------------------------------------- sum-tree
@pytest.mark.parametrize("size", [1, 2, 7, 13, 64])
def test_sum_tree_total_and_find_match_cumsum(size):
    rng = np.random.default_rng(size)
    tree = SumTree(size, torch.device("cpu"))
    # integer priorities make every prefix sum exact, so interval edges are exact too
    priorities = rng.integers(0, 6, size).astype(np.float64)
    priorities[rng.integers(0, size)] = 3.0  # at least one non-zero leaf
    tree.set(torch.arange(size), torch.from_numpy(priorities))
    # and a second partial update
    idx = rng.choice(size, size=max(1, size // 2), replace=False)
    priorities[idx] = rng.integers(0, 6, len(idx))
    if priorities.sum() == 0:
        priorities[0] = 1.0
        idx = np.append(idx, 0)
    tree.set(torch.from_numpy(idx), torch.from_numpy(priorities[idx]))

    total = priorities.sum()
    assert tree.total.item() == total
    assert tree.leaves(torch.arange(size)).tolist() == priorities.tolist()

    cumsum = np.cumsum(priorities)
    edges = np.concatenate([[0.0], cumsum[:-1]])
    masses = np.concatenate(
        [
            np.linspace(0, total, 997, endpoint=False),
            edges,  # exactly at the start of every interval (zero-width ones included)
            np.nextafter(edges, np.inf),
            np.nextafter(cumsum, -np.inf),  # just below the end of every interval
        ]
    )
    masses = masses[(masses >= 0) & (masses < total)]
    found = tree.find(torch.from_numpy(masses)).numpy()
    expected = np.searchsorted(cumsum, masses, side="right")
    np.testing.assert_array_equal(found, expected)
    assert (priorities[found] > 0).all()


def test_sum_tree_never_returns_zero_leaves_at_edges():
    tree = SumTree(8, torch.device("cpu"))
    priorities = torch.tensor([0.0, 3.0, 0.0, 0.0, 2.0, 0.0, 5.0, 0.0], dtype=torch.float64)
    tree.set(torch.arange(8), priorities)
    assert tree.total.item() == 10.0
    masses = torch.tensor([0.0, 2.999, 3.0, 4.999, 5.0, 9.999, 10.0], dtype=torch.float64)
    # 10.0 is the total itself: (B - 1 + u) / B * total can round up to it when sampling
    assert tree.find(masses).tolist() == [1, 1, 4, 4, 6, 6, 6]

    # random float priorities with a run of zeros at both ends; every mass lands on a non-zero leaf
    rng = np.random.default_rng(0)
    p = rng.random(13)
    p[[0, 1, 5, 6, 7, 11, 12]] = 0.0
    tree = SumTree(13, torch.device("cpu"))
    tree.set(torch.arange(13), torch.from_numpy(p))
    assert tree.total.item() == pytest.approx(p.sum(), rel=1e-12)
    total = tree.total.item()
    masses = np.concatenate([np.linspace(0, total, 5001), np.cumsum(p), [np.nextafter(total, 0)]])
    found = tree.find(torch.from_numpy(masses)).numpy()
    assert (p[found] > 0).all()
    cumsum = np.cumsum(p)
    mid = (np.concatenate([[0.0], cumsum[:-1]]) + cumsum) / 2  # interval midpoints, away from rounding
    np.testing.assert_array_equal(tree.find(torch.from_numpy(mid[p > 0])).numpy(), np.flatnonzero(p > 0))


# ----------------------------------------------------------------------------- prioritised sampling
def test_prioritized_sampling_frequencies_and_weights():
    steps = scripted_steps(4, 2, {})
    buffer = make_buffer(capacity=8, n_step=1, prioritized=True, alpha=1.0, priority_eps=1e-12)
    assert buffer.capacity == 8
    add_steps(buffer, steps)
    assert len(buffer) == 8
    td = torch.tensor([0.5, 1.0, 2.0, 4.0, 0.25, 3.0, 1.5, 6.0])
    buffer.update_priorities(torch.arange(8), -td)  # the sign of the TD error is ignored
    p = td.double().numpy() + 1e-12
    probs = p / p.sum()
    assert buffer.tree.total.item() == pytest.approx(p.sum())

    gen = torch.Generator().manual_seed(123)
    counts = np.zeros(8)
    batches, batch_size, beta = 50, 4096, 0.4
    for _ in range(batches):
        batch = buffer.sample(batch_size, generator=gen, beta=beta)
        slot = batch.indices.numpy()
        counts += np.bincount(slot, minlength=8)
        # the slot is the one that holds the observation: slot = t * N + env, obs = t * 10 + env
        t, e = divmod(slot, 2)
        np.testing.assert_array_equal(batch.obs.squeeze(1).numpy(), t * 10 + e)
        expected_w = (8 * probs[slot]) ** -beta
        expected_w /= expected_w.max()
        np.testing.assert_allclose(batch.weights.numpy(), expected_w, rtol=1e-5)
        assert batch.weights.max().item() == 1.0
        np.testing.assert_allclose(batch.rewards.numpy(), t + 1 + e / 100, rtol=1e-6)
    draws = batches * batch_size
    expected = draws * probs
    sigma = np.sqrt(draws * probs * (1 - probs))
    assert (np.abs(counts - expected) < 5 * sigma).all(), (counts, expected)
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 35.0  # 7 degrees of freedom: P(chi2 > 35) ~ 1e-5
    # not the uniform distribution: slot 7 (td 6) is drawn 24 times as often as slot 4 (td 0.25)
    assert counts[7] / counts[4] == pytest.approx(24.0, rel=0.1)


def test_prioritized_weights_with_incomplete_rows_and_beta_one():
    # 4 of the 8 slots sampleable (n = 3, 4 rows of 2 envs but only rows 0..1 complete)
    buffer = make_buffer(capacity=8, n_step=3, prioritized=True, alpha=1.0, priority_eps=1e-12)
    add_steps(buffer, scripted_steps(4, 2, {}))
    assert len(buffer) == 4
    buffer.update_priorities(torch.tensor([0, 1, 2, 3]), torch.tensor([1.0, 1.0, 1.0, 5.0]))
    batch = buffer.sample(512, generator=torch.Generator().manual_seed(0), beta=1.0)
    probs = np.array([1.0, 1.0, 1.0, 5.0]) / 8.0
    slot = batch.indices.numpy()
    assert set(slot.tolist()) == {0, 1, 2, 3}
    w = (4 * probs[slot]) ** -1.0
    np.testing.assert_allclose(batch.weights.numpy(), w / w.max(), rtol=1e-5)
    # by hand: P = 1/8 -> (4/8)^-1 = 2; P = 5/8 -> (20/8)^-1 = 0.4; max 2
    assert sorted(set(batch.weights.tolist())) == pytest.approx([0.2, 1.0])


def test_update_priorities_applies_alpha_and_tracks_the_maximum():
    buffer = make_buffer(capacity=8, n_step=1, prioritized=True, alpha=0.5, priority_eps=0.01)
    add_steps(buffer, scripted_steps(4, 2, {}))
    # every slot enters at the initial maximum priority 1
    assert buffer.tree.leaves(torch.arange(8)).tolist() == [1.0] * 8
    buffer.update_priorities(torch.tensor([2, 5]), torch.tensor([-3.99, 8.99]))
    leaves = buffer.tree.leaves(torch.arange(8)).tolist()
    assert leaves == pytest.approx([1.0, 1.0, 2.0, 1.0, 1.0, 3.0, 1.0, 1.0])  # (|td| + 0.01) ** 0.5
    assert buffer.max_priority.item() == pytest.approx(3.0)
    assert buffer.tree.total.item() == pytest.approx(11.0)
    # the next step overwrites row 0 (slots 0, 1): they enter at the maximum, 3
    add_steps(buffer, scripted_steps(5, 2, {})[4:])
    assert buffer.tree.leaves(torch.arange(8)).tolist() == pytest.approx([3.0, 3.0, 2.0, 1.0, 1.0, 3.0, 1.0, 1.0])


# ----------------------------------------------------------------------------- prioritised n-step
def test_prioritized_nstep_priorities_of_incomplete_windows():
    n, N, rows = 3, 2, 6
    ends = {(1, 0): "term", (7, 1): "trunc", (9, 0): "term"}
    steps = scripted_steps(14, N, ends)
    buffer = make_buffer(capacity=N * rows, n_step=n, prioritized=True, alpha=1.0, priority_eps=1e-12)
    assert buffer.rows == rows
    gen = torch.Generator().manual_seed(7)
    max_priority = 1.0
    for T in range(1, len(steps) + 1):
        add_steps(buffer, steps[T - 1 : T])
        leaves = buffer.tree.leaves(torch.arange(N * rows)).view(rows, N)
        held = range(max(0, T - rows), T)  # steps held, step t in row t % rows
        complete = range(max(0, T - rows), T - n + 1)
        for t in held:
            if t in complete:
                assert (leaves[t % rows] > 0).all(), (T, t)
            else:  # the newest n - 1 rows
                assert (leaves[t % rows] == 0).all(), (T, t)
        assert (leaves[T:] == 0).all()  # rows never written (empty once T >= rows)
        if T - n >= 0:
            # the row this step completed enters at the highest priority seen so far
            assert leaves[(T - n) % rows].tolist() == [max_priority] * N
        assert len(buffer) == len(complete) * N
        assert (leaves > 0).sum().item() == len(buffer)
        if len(buffer) == 0:
            continue
        batch = buffer.sample(256, generator=gen)
        check_batch(batch, steps, complete, n)
        # raise the priorities of what was sampled: the next completed row gets the new maximum
        td = torch.full((256,), 0.5 + T)
        buffer.update_priorities(batch.indices, td)
        max_priority = 0.5 + T + 1e-12
        assert buffer.max_priority.item() == pytest.approx(max_priority)


# ----------------------------------------------------------------------------- state dict
@pytest.mark.parametrize("prioritized", [False, True])
@pytest.mark.parametrize("T", [4, 13])  # partly filled, and wrapped around
def test_state_dict_round_trip_samples_the_same_batches(prioritized, T):
    steps = scripted_steps(T, 2, {(2, 0): "term", (5, 1): "trunc", (9, 0): "trunc"})
    buffer = make_buffer(capacity=10, n_step=3, prioritized=prioritized)
    add_steps(buffer, steps)
    if prioritized:
        batch = buffer.sample(64, generator=torch.Generator().manual_seed(0))
        buffer.update_priorities(batch.indices, torch.linspace(0.1, 3.0, 64))
    state = buffer.state_dict()

    clone = make_buffer(capacity=10, n_step=3, prioritized=prioritized)
    clone.load_state_dict(state)
    assert (clone.pos, clone.filled, len(clone)) == (buffer.pos, buffer.filled, len(buffer))
    for seed in (1, 2):
        a = buffer.sample(512, generator=torch.Generator().manual_seed(seed))
        b = clone.sample(512, generator=torch.Generator().manual_seed(seed))
        for name, x, y in zip(a._fields, a, b, strict=True):
            assert torch.equal(x, y), name
    # and it stays in step after more adds
    more = scripted_steps(T + 2, 2, {})[T:]
    add_steps(buffer, more)
    add_steps(clone, more)
    a = buffer.sample(512, generator=torch.Generator().manual_seed(3))
    b = clone.sample(512, generator=torch.Generator().manual_seed(3))
    for name, x, y in zip(a._fields, a, b, strict=True):
        assert torch.equal(x, y), name


def test_load_state_dict_rejects_a_mismatched_buffer():
    buffer = make_buffer(capacity=12, n_step=3, num_envs=2)
    add_steps(buffer, scripted_steps(5, 2, {}))
    state = buffer.state_dict()
    other = make_buffer(capacity=18, n_step=3, num_envs=3)
    assert other.rows == buffer.rows == 6  # the same rows, other envs
    with pytest.raises(ValueError):
        other.load_state_dict(state)
    smaller = make_buffer(capacity=8, n_step=3, num_envs=2)
    with pytest.raises(ValueError):
        smaller.load_state_dict(state)
    # a prioritized buffer cannot resume from a state without priorities
    prioritized = make_buffer(capacity=12, n_step=3, num_envs=2, prioritized=True)
    with pytest.raises(ValueError):
        prioritized.load_state_dict(state)


def test_capacity_rounds_up_to_whole_rows():
    buffer = make_buffer(capacity=7, n_step=1, num_envs=2)
    assert (buffer.rows, buffer.capacity) == (4, 8)
    buffer = make_buffer(capacity=2, n_step=3, num_envs=2)  # at least n + 1 rows
    assert buffer.rows == 4
    assert math.isclose(buffer.gamma, GAMMA)
