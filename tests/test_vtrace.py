"""V-trace targets and advantages against values worked out by hand."""

import math

import pytest
import torch

from agents.advantages import compute_gae
from agents.vtrace import vtrace


def col(*xs: float) -> torch.Tensor:
    """One env's values over time as a [T, 1] tensor."""
    return torch.tensor(xs).unsqueeze(1)


def flags(T: int, *steps: int) -> torch.Tensor:
    """A [T, 1] bool tensor, True at `steps`."""
    out = torch.zeros(T, 1, dtype=torch.bool)
    out[list(steps)] = True
    return out


def assert_close(got: torch.Tensor, want: torch.Tensor) -> None:
    # torch.allclose, not torch.testing.assert_close: its first call imports torch.distributed (~1 s)
    assert got.shape == want.shape and torch.allclose(got, want, rtol=1e-5, atol=1e-6), (got, want)


def log_ratios(*ratios: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(behaviour, target) log-probs whose ratios pi/mu are `ratios`."""
    behaviour = col(*[-1.0] * len(ratios))
    return behaviour, behaviour + col(*[math.log(r) for r in ratios])


def test_on_policy_gives_bootstrapped_returns():
    # gamma 0.9, no episode end: v_2 = 3 + 0.9 * 2 = 4.8; v_1 = 2 + 0.9 * 4.8 = 6.32; v_0 = 1 + 0.9 * 6.32.
    logp = col(-0.7, -0.2, -1.3)
    rewards, values, next_values = col(1.0, 2.0, 3.0), col(0.5, 1.0, 1.5), col(1.0, 1.5, 2.0)
    out = vtrace(logp, logp, rewards, values, next_values, flags(3), flags(3), 0.9)
    assert out.vs[:, 0].tolist() == pytest.approx([6.688, 6.32, 4.8])
    assert out.clipped_rhos[:, 0].tolist() == pytest.approx([1.0, 1.0, 1.0])
    # pg_t = r_t + 0.9 * v'_{t+1} - V_t, v' = [v_1, v_2, next_values_2]
    assert out.pg_advantages[:, 0].tolist() == pytest.approx([1 + 0.9 * 6.32 - 0.5, 2 + 0.9 * 4.8 - 1, 3.3])


@pytest.mark.parametrize("lam", [1.0, 0.8])
def test_on_policy_matches_gae_returns_with_episode_ends(lam):
    # On-policy rho_t = 1 and c_t = lambda, so v_s - V(x_s) is GAE(lambda) with the same cuts.
    g = torch.Generator().manual_seed(0)
    T, N = 6, 4
    logp = -torch.rand(T, N, generator=g)
    rewards, values, next_values = (torch.randn(T, N, generator=g) for _ in range(3))
    terminated = torch.rand(T, N, generator=g) < 0.2
    truncated = (torch.rand(T, N, generator=g) < 0.2) & ~terminated
    out = vtrace(logp, logp, rewards, values, next_values, terminated, truncated, 0.95, lambda_=lam)
    _, returns = compute_gae(rewards, values, next_values, terminated, truncated, 0.95, lam)
    assert_close(out.vs, returns)


@pytest.mark.parametrize(
    ("ratios", "rho_bar", "c_bar", "lam", "expected"),
    [
        # rho = c = [1, 0.5]: d_1 = 0.5 (1 + 0.9 * 3 - 2) = 0.85, d_0 = 1.8; v_0 = 1 + 1.8 + 0.9 * 1 * 0.85
        ((2.0, 0.5), 1.0, 1.0, 1.0, [3.565, 2.85]),
        # rho = c = [0.5, 1]: d_1 = 1.7, d_0 = 0.5 * 1.8 = 0.9; v_0 = 1 + 0.9 + 0.9 * 0.5 * 1.7
        ((0.5, 2.0), 1.0, 1.0, 1.0, [2.665, 3.7]),
        # rho = [1.5, 0.5], c = 0.5 * [1, 0.5]: d_1 = 0.85, d_0 = 2.7; v_0 = 1 + 2.7 + 0.9 * 0.5 * 0.85
        ((2.0, 0.5), 1.5, 1.0, 0.5, [4.0825, 2.85]),
    ],
)
def test_importance_ratios_are_clipped(ratios, rho_bar, c_bar, lam, expected):
    # T=2, gamma 0.9, r = [1, 1], V = [1, 2], next_values = [2, 3]; raw deltas [1.8, 1.7]
    behaviour, target = log_ratios(*ratios)
    rewards, values, next_values = col(1.0, 1.0), col(1.0, 2.0), col(2.0, 3.0)
    out = vtrace(
        behaviour,
        target,
        rewards,
        values,
        next_values,
        flags(2),
        flags(2),
        0.9,
        rho_bar=rho_bar,
        c_bar=c_bar,
        lambda_=lam,
    )
    assert out.vs[:, 0].tolist() == pytest.approx(expected)
    assert out.clipped_rhos[:, 0].tolist() == pytest.approx([min(rho_bar, r) for r in ratios])


def test_pg_advantages_use_next_targets_and_their_own_clip():
    # The first clipping case: v = [3.565, 2.85], rho = [1, 0.5].
    behaviour, target = log_ratios(2.0, 0.5)
    rewards, values, next_values = col(1.0, 1.0), col(1.0, 2.0), col(2.0, 3.0)
    out = vtrace(behaviour, target, rewards, values, next_values, flags(2), flags(2), 0.9)
    # pg_0 = 1 * (1 + 0.9 * v_1 - 1) = 2.565; pg_1 = 0.5 * (1 + 0.9 * next_values_1 - 2) = 0.85
    assert out.pg_advantages[:, 0].tolist() == pytest.approx([2.565, 0.85])
    wide = vtrace(behaviour, target, rewards, values, next_values, flags(2), flags(2), 0.9, pg_rho_bar=2.0)
    assert wide.pg_advantages[:, 0].tolist() == pytest.approx([2 * 2.565, 0.85])
    assert wide.vs[:, 0].tolist() == pytest.approx([3.565, 2.85])  # pg_rho_bar leaves the targets alone


# T=3, gamma 0.9, on-policy; the episode ends at t=1 and a new one starts at t=2 (V(x_2) = 3).
# next_values[1] = 10 is V(final observation) of the ended episode.
EPISODE_END = {"rewards": col(1.0, 1.0, 1.0), "values": col(1.0, 2.0, 3.0), "next_values": col(2.0, 10.0, 4.0)}


def test_truncated_step_bootstraps_from_its_final_value_and_cuts_the_trace():
    logp = col(-0.5, -0.5, -0.5)
    out = vtrace(logp, logp, **EPISODE_END, terminated=flags(3), truncated=flags(3, 1), gamma=0.9)
    # v_2 = 1 + 0.9 * 4 = 4.6; v_1 = 1 + 0.9 * 10 = 10, not + 0.9 * (v_2 - V_2); v_0 = 1 + 0.9 * 10
    assert out.vs[:, 0].tolist() == pytest.approx([10.0, 10.0, 4.6])
    # pg_1 bootstraps from next_values_1 = 10, not from v_2: 1 + 9 - 2
    assert out.pg_advantages[:, 0].tolist() == pytest.approx([1 + 0.9 * 10 - 1, 8.0, 1.6])


def test_terminated_step_does_not_bootstrap():
    logp = col(-0.5, -0.5, -0.5)
    out = vtrace(logp, logp, **EPISODE_END, terminated=flags(3, 1), truncated=flags(3), gamma=0.9)
    # v_1 = r_1 = 1 (the 10 is ignored); v_0 = 1 + 0.9 * 1; v_2 = 4.6 as before
    assert out.vs[:, 0].tolist() == pytest.approx([1.9, 1.0, 4.6])
    assert out.pg_advantages[:, 0].tolist() == pytest.approx([0.9, -1.0, 1.6])
    # whatever sits in next_values at a terminated step, even inf or nan, is not used
    for junk in (float("inf"), float("nan")):
        nv = EPISODE_END["next_values"].clone()
        nv[1, 0] = junk
        other = vtrace(logp, logp, EPISODE_END["rewards"], EPISODE_END["values"], nv, flags(3, 1), flags(3), 0.9)
        for got, want in zip(other, out, strict=True):
            assert_close(got, want)


def test_trace_does_not_cross_an_episode_end_off_policy():
    # rho = c = 0.5 everywhere, truncated at t=0: v_0 must not see step 1, whatever its reward.
    behaviour, target = log_ratios(0.5, 0.5)
    values, next_values = col(1.0, 2.0), col(4.0, 3.0)
    outs = [
        vtrace(behaviour, target, col(1.0, r), values, next_values, flags(2), flags(2, 0), 0.9) for r in (1.0, 50.0)
    ]
    # v_0 = 1 + 0.5 * (1 + 0.9 * 4 - 1) = 2.8
    assert [o.vs[0, 0].item() for o in outs] == pytest.approx([2.8, 2.8])
    assert [o.pg_advantages[0, 0].item() for o in outs] == pytest.approx([0.5 * 3.6, 0.5 * 3.6])


def test_batched_envs_match_each_env_alone():
    g = torch.Generator().manual_seed(1)
    T, N = 5, 3
    behaviour, target = -torch.rand(T, N, generator=g), -torch.rand(T, N, generator=g)
    rewards, values, next_values = (torch.randn(T, N, generator=g) for _ in range(3))
    terminated = torch.rand(T, N, generator=g) < 0.25
    truncated = (torch.rand(T, N, generator=g) < 0.25) & ~terminated
    kwargs = {"gamma": 0.99, "rho_bar": 1.2, "c_bar": 0.9, "lambda_": 0.95}
    inputs = (behaviour, target, rewards, values, next_values, terminated, truncated)
    batched = vtrace(*inputs, **kwargs)
    for n in range(N):
        alone = vtrace(*(x[:, n : n + 1] for x in inputs), **kwargs)
        for got, want in zip(batched, alone, strict=True):
            assert_close(got[:, n : n + 1], want)


def test_outputs_are_detached_and_shapes_checked():
    logp = torch.zeros(3, 2, requires_grad=True)
    values = torch.ones(3, 2, requires_grad=True)
    no = torch.zeros(3, 2, dtype=torch.bool)
    out = vtrace(logp.detach(), logp, torch.ones(3, 2), values, values, no, no, 0.9)
    assert not any(x.requires_grad for x in out)
    assert all(x.shape == (3, 2) for x in out)
    with pytest.raises(ValueError, match=r"\[T, N\]"):
        vtrace(logp, logp, torch.ones(3), values, values, no, no, 0.9)
