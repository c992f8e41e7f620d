"""V-trace off-policy value targets and policy-gradient advantages (Espeholt et al. 2018, IMPALA)."""

from __future__ import annotations

from typing import NamedTuple

import torch


class VTraceReturns(NamedTuple):
    """The outputs of `vtrace`, each time-major [T, N] and detached."""

    vs: torch.Tensor  # value targets v_s
    pg_advantages: torch.Tensor  # advantages for the policy gradient
    clipped_rhos: torch.Tensor  # rho_t = min(rho_bar, pi/mu), the importance weights used in delta_t


@torch.no_grad()
def vtrace(
    behaviour_log_probs: torch.Tensor,
    target_log_probs: torch.Tensor,
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float,
    rho_bar: float = 1.0,
    c_bar: float = 1.0,
    lambda_: float = 1.0,
    pg_rho_bar: float | None = None,
) -> VTraceReturns:
    """V-trace targets for data collected by a behaviour policy mu, learning about a target pi.

    All inputs are time-major [T, N]; `terminated` and `truncated` are bool. `values[t]` is
    V(x_t) under the current value net. `next_values[t]` is the value of the state step t
    reached, as in `compute_gae`: for a truncated step V(final observation), so the targets
    bootstrap through time limits; for a terminated step it is ignored (a terminal state has
    no future); otherwise V(x_{t+1}), and the last row is the bootstrap value of the
    unroll's end. With pi/mu = exp(target_log_probs - behaviour_log_probs):

      rho_t   = min(rho_bar, pi/mu)              c_t = lambda_ * min(c_bar, pi/mu)
      delta_t = rho_t * (r_t + gamma * (1 - terminated_t) * next_values_t - V(x_t))
      v_s     = V(x_s) + delta_s + gamma * c_s * (1 - done_s) * (v_{s+1} - V(x_{s+1}))

    with done = terminated | truncated and v_T - V(x_T) = 0 past the unroll's end. The
    correction trace is cut at any episode end, so it never carries the next episode's
    errors back: at a truncated step the bootstrap enters through next_values in delta, at
    a terminated step there is none. The policy-gradient advantage is

      pg_advantages_t = min(pg_rho_bar, pi/mu) * (r_t + gamma * (1 - terminated_t) * v'_{t+1} - V(x_t))

    with v'_{t+1} = v_{t+1} inside an episode of the unroll, and next_values_t at the
    unroll's last step or a truncated step (at a terminated step the term is dropped).
    `pg_rho_bar` defaults to `rho_bar`. next_values at a terminated step is never read, so
    whatever stands there (even inf or nan) cannot leak in. On-policy (pi = mu, rho_bar and
    c_bar >= 1) v_s - V(x_s) is GAE(lambda_): with lambda_ = 1, v_s is the n-step return
    bootstrapped at the end of the unroll, as `compute_gae(..., gae_lambda=1)` gives.

    Computed without gradients: every output is detached.
    """
    if not rho_bar > 0 or not c_bar > 0:
        raise ValueError(f"rho_bar and c_bar must be positive, got rho_bar={rho_bar}, c_bar={c_bar}")
    inputs = (behaviour_log_probs, target_log_probs, rewards, values, next_values, terminated, truncated)
    if values.dim() != 2 or any(x.shape != values.shape for x in inputs):
        shapes = ", ".join(str(tuple(x.shape)) for x in inputs)
        raise ValueError(f"vtrace takes time-major [T, N] inputs, all of one shape; got {shapes}")
    pg_rho_bar = rho_bar if pg_rho_bar is None else pg_rho_bar

    terminated, truncated = terminated.to(torch.bool), truncated.to(torch.bool)
    done = terminated | truncated
    not_done = (~done).to(values.dtype)
    # A terminated step has no future: drop its next_values outright rather than multiply by
    # 0, which would turn an inf or nan standing there into nan.
    next_values = torch.where(terminated, torch.zeros_like(next_values), next_values)
    ratios = torch.exp(target_log_probs - behaviour_log_probs)
    clipped_rhos = ratios.clamp(max=rho_bar)
    cs = lambda_ * ratios.clamp(max=c_bar)

    deltas = clipped_rhos * (rewards + gamma * next_values - values)
    decay = gamma * cs * not_done
    corrections = torch.empty_like(deltas)  # v_s - V(x_s)
    running = torch.zeros_like(deltas[0])
    for t in range(deltas.shape[0] - 1, -1, -1):
        running = deltas[t] + decay[t] * running
        corrections[t] = running
    vs = values + corrections

    # v'_{t+1}: the next step's target where the episode goes on inside the unroll, else next_values.
    vs_next = torch.cat([vs[1:], next_values[-1:]])
    vs_next = torch.where(done, next_values, vs_next)  # 0 at a terminated step
    pg_advantages = ratios.clamp(max=pg_rho_bar) * (rewards + gamma * vs_next - values)
    return VTraceReturns(vs, pg_advantages, clipped_rhos)
