"""Asynchronous PPO (APPO): PPO's clipped objective on data from lagging policies, corrected by
V-trace (Espeholt et al. 2018), with a target network as in IMPACT (Luo et al. 2020) and
RLlib's APPO.

Through Ray workers (`--num-workers`, `runners.ray_workers.RayAsyncLoop`) the rollouts come
from the policy a worker was last sent, some learner updates old: the behaviour policy mu.
One update on a rollout, with pi_target the target network's policy and V the value net now:

    V-trace   with log(pi_target / mu): value targets v_s and policy-gradient advantages
              A_t = min(rho_bar, pi_target/mu) (r_t + gamma v'_{t+1} - V(x_t))  (`agents.vtrace`),
              bootstrapped at truncations, never through terminations
    loss      -min(r A, clip(r, 1 - eps, 1 + eps) A),  r = pi(a|s) / pi_target(a|s)
              + vf_coef (V(s) - v_s)^2 - ent_coef entropy

over `n_epochs` passes of minibatches, as PPO (this class reuses PPO's update with V-trace in
place of GAE). Every `target_update_interval` updates the target network copies the policy.
Run locally (no workers) the behaviour policy is the current one and V-trace with
rho_bar = c_bar = 1 reduces to lambda-returns: APPO is then PPO with those targets.

This is APPO (clipped); IMPALA would be the same learner without the clipping and target
network, and is not built separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from agents.batch import Metrics, Progress, Rollout
from agents.config import ConfigError, require, require_fraction, require_positive
from agents.optim import target_copy
from agents.ppo import PPO, PPOConfig
from agents.vtrace import vtrace


@dataclass
class APPOConfig(PPOConfig):
    """APPO hyperparameters: PPO's, plus V-trace's truncation levels, the target network's
    update interval, and the oldest policy whose data the learner still uses."""

    rho_bar: float = 1.0
    """V-trace: truncation of the importance weights in the value targets and advantages."""
    c_bar: float = 1.0
    """V-trace: truncation of the trace coefficients."""
    vtrace_lambda: float = 1.0
    """V-trace's lambda: 1 is the paper's V-trace; lower values mix shorter returns, as GAE's."""
    target_update_interval: int = 1
    """Learner updates between copies of the policy into the target network."""
    max_policy_lag: int = 16
    """Drop rollouts collected by a policy more than this many learner updates old (Ray workers)."""

    def validate(self) -> None:
        super().validate()
        require_positive(self, "rho_bar", "c_bar", "target_update_interval")
        require_fraction(self, "vtrace_lambda")
        require(self.max_policy_lag >= 0, "max_policy_lag", "zero or positive", self.max_policy_lag)
        if self.normalize_reward:
            raise ConfigError("appo does not support --normalize-reward (its rollouts come from any worker's envs)")
        if self.network.recurrent != "none":
            raise ConfigError("appo supports feed-forward networks only; use ppo for --recurrent")


class APPO(PPO):
    """The APPO agent; see the module docstring."""

    config: APPOConfig

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.target_net = target_copy(self.net)
        self.updates = 0
        self._behaviour_log_probs: torch.Tensor | None = None

    def update(self, batch: Rollout, progress: Progress) -> Metrics:
        if batch.last_obs is None or batch.final_obs is None:
            raise ValueError("APPO needs rollouts with final_obs and last_obs (runners.rollout.OnPolicyCollector)")
        T, N = batch.rewards.shape
        with torch.no_grad():
            obs = self.preprocess(batch.obs).flatten(0, 1)
            actions = batch.actions.flatten(0, 1)
            target_log_probs = self.target_net.evaluate(obs, actions)[0].view(T, N)
            values = self.net.value(obs).view(T, N)
            last = self.net.value(self.preprocess(batch.last_obs))
            final = self.net.value(self.preprocess(batch.final_obs).flatten(0, 1)).view(T, N)
            next_values = torch.where(batch.truncated, final, torch.cat([values[1:], last.unsqueeze(0)]))
        self._behaviour_log_probs = batch.log_probs
        # PPO's update with pi_target as the "old" policy and V-trace targets (`advantages` below)
        relabelled = batch._replace(log_probs=target_log_probs, values=values, next_values=next_values)
        metrics = super().update(relabelled, progress)
        self._behaviour_log_probs = None
        self.updates += 1
        if self.updates % self.config.target_update_interval == 0:
            self.target_net.load_state_dict(self.net.state_dict())
        return metrics

    def advantages(self, batch: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        """V-trace's policy-gradient advantages and value targets [T, N] (`batch.log_probs`
        hold the target network's log-probabilities; the behaviour's were kept by `update`)."""
        cfg = self.config
        out = vtrace(
            self._behaviour_log_probs,
            batch.log_probs,
            batch.rewards,
            batch.values,
            batch.next_values,
            batch.terminated,
            batch.truncated,
            cfg.gamma,
            cfg.rho_bar,
            cfg.c_bar,
            cfg.vtrace_lambda,
        )
        return out.pg_advantages, out.vs

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "target_net": self.target_net.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.target_net.load_state_dict(state["target_net"])
        self.updates = int(state["updates"])
