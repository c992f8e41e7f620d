"""Synchronous advantage actor-critic (A2C; Mnih et al. 2016, synchronous form).

One gradient step per rollout on

    policy loss  -log pi(a|s) A
  + vf_coef    * (V(s) - R)^2
  - ent_coef   * entropy,

where A and R come from the same GAE code as PPO (gae_lambda=1 gives the classic
n-step returns), with RMSprop (or Adam) and global gradient-norm clipping.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from agents.advantages import explained_variance, standardize
from agents.batch import Metrics, Progress, Rollout
from agents.config import require_positive
from agents.on_policy import OnPolicyBase, OnPolicyConfig
from agents.optim import adam, compiled, descend, materialize_state, set_learning_rate
from agents.schedules import scheduled


@dataclass
class A2CConfig(OnPolicyConfig):
    """A2C hyperparameters; defaults are Stable-Baselines3's.

    SB3's default A2C takes a gradient step every 5 transitions (n_steps 5 on its one env), on
    returns looking up to 5 steps ahead. Sharing those 5 transitions among our default 8 envs
    is impossible (one step per env is the least), and 8 envs x 1 step, returns that bootstrap
    after one step, learns far slower per env step on CartPole-v1, for SB3 too (figures in
    tests/test_defaults_vs_sb3.py). So A2C keeps SB3's 5 steps per env, as SB3 itself runs with
    several envs: with 8 envs, 40 transitions per update, 1/8 of SB3's one-env updates per env
    step. With --num-envs 1 it is SB3's default exactly.
    """

    n_steps: int | None = 5
    """Steps each env takes per rollout; one update uses n_steps x num_envs transitions."""
    learning_rate: float = 7e-4
    gae_lambda: float = 1.0
    normalize_advantage: bool = False
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"
    """Optimiser: RMSprop as in the A2C paper and SB3, or Adam."""
    rmsprop_alpha: float = 0.99
    """Smoothing constant of RMSprop's squared-gradient average."""
    optimizer_eps: float = 1e-5
    """Epsilon of the optimiser's denominator."""

    def validate(self) -> None:
        super().validate()
        require_positive(self, "rmsprop_alpha", "optimizer_eps")


class A2C(OnPolicyBase):
    """The A2C agent: one synchronous gradient step per rollout."""

    config: A2CConfig

    def make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        params = self.net.parameters()
        # a compiled step reads the learning rate from a tensor, so that a schedule does not recompile it
        lr = torch.tensor(cfg.learning_rate) if self.compile else cfg.learning_rate
        self._gradient_step = compiled(self.gradient_step, self.compile, self.device)
        if cfg.optimizer == "adam":
            return adam(params, lr, self.device, self.compile, eps=cfg.optimizer_eps)
        optimizer = torch.optim.RMSprop(
            params, lr=lr, alpha=cfg.rmsprop_alpha, eps=cfg.optimizer_eps, foreach=not self.compile
        )
        materialize_state(optimizer)
        return optimizer

    def update(self, batch: Rollout, progress: Progress) -> Metrics:
        cfg = self.config
        lr = scheduled(cfg.learning_rate, cfg.lr_schedule, progress.fraction)
        set_learning_rate(self.optimizer, lr)

        advantages, returns = self.advantages(batch)
        L = self.chunk_length(batch.rewards.shape[0])
        obs, actions = self.chunk(self.preprocess(batch.obs), L), self.chunk(batch.actions, L)
        if self.recurrent:
            states, starts = batch.states[::L].flatten(0, 1), self.chunk(batch.starts, L)
        else:
            states = starts = None
        advantages, returns = self.chunk(advantages, L).flatten(), self.chunk(returns, L).flatten()
        losses = self._gradient_step(obs, actions, states, starts, advantages, returns)
        metrics = dict(zip(("losses/policy_loss", "losses/value_loss", "losses/entropy"), losses, strict=True))
        metrics["losses/explained_variance"] = explained_variance(self.chunk(batch.values, L).flatten(), returns)
        metrics["charts/learning_rate"] = lr
        self.finish_update(batch)
        return metrics

    def gradient_step(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        states: torch.Tensor | None,
        starts: torch.Tensor | None,
        advantages: torch.Tensor,
        returns: torch.Tensor,
    ) -> torch.Tensor:
        """A2C's one step on chunks [L, C, ...] with their advantages and returns [L*C]; returns
        the policy, value and entropy terms [3]."""
        cfg = self.config
        log_probs, entropy, values = self.evaluate_chunks(obs, actions, states, starts)
        if cfg.normalize_advantage and advantages.numel() > 1:
            advantages = standardize(advantages)
        policy_loss = -(advantages * log_probs).mean()
        value_loss = (values - returns).square().mean()
        entropy_mean = entropy.mean()
        loss = policy_loss + cfg.vf_coef * value_loss
        if cfg.ent_coef:  # with a zero weight, keep the entropy out of the backward pass
            loss = loss - cfg.ent_coef * entropy_mean

        descend(self.optimizer, loss, cfg.max_grad_norm, self.distributed)  # DDP: averaged over the ranks
        return torch.stack([policy_loss, value_loss, entropy_mean]).detach()
