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
from agents.batch import Rollout
from agents.config import require_positive
from agents.on_policy import OnPolicyAgent, OnPolicyConfig, fused_kwargs
from agents.schedules import scheduled


@dataclass
class A2CConfig(OnPolicyConfig):
    """A2C hyperparameters; defaults are Stable-Baselines3's."""

    n_steps: int = 5
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


class A2C(OnPolicyAgent):
    """The A2C agent: one synchronous gradient step per rollout."""

    config: A2CConfig

    def make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        params = self.net.parameters()
        if cfg.optimizer == "adam":
            return torch.optim.Adam(params, lr=cfg.learning_rate, eps=cfg.optimizer_eps, **fused_kwargs(self.device))
        return torch.optim.RMSprop(
            params, lr=cfg.learning_rate, alpha=cfg.rmsprop_alpha, eps=cfg.optimizer_eps, foreach=True
        )

    def update(self, batch: Rollout, progress: float) -> dict[str, float | torch.Tensor]:
        cfg = self.config
        lr = scheduled(cfg.learning_rate, cfg.lr_schedule, progress)
        self.set_learning_rate(lr)

        advantages, returns = self.advantages(batch)
        L = self.chunk_length(batch.rewards.shape[0])
        obs, actions = self.chunk(self.preprocess(batch.obs), L), self.chunk(batch.actions, L)
        if self.recurrent:
            states, starts = batch.states[::L].flatten(0, 1), self.chunk(batch.starts, L)
        else:
            states = starts = None
        log_probs, entropy, values = self.evaluate_chunks(obs, actions, states, starts)
        advantages, returns = self.chunk(advantages, L).flatten(), self.chunk(returns, L).flatten()
        if cfg.normalize_advantage and advantages.numel() > 1:
            advantages = standardize(advantages)
        policy_loss = -(advantages * log_probs).mean()
        value_loss = (values - returns).square().mean()
        entropy_mean = entropy.mean()
        loss = policy_loss + cfg.vf_coef * value_loss
        if cfg.ent_coef:  # with a zero weight, keep the entropy out of the backward pass
            loss = loss - cfg.ent_coef * entropy_mean

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(self.net.parameters()), cfg.max_grad_norm, foreach=True)
        self.optimizer.step()

        losses = torch.stack([policy_loss, value_loss, entropy_mean]).detach()
        metrics = dict(zip(("losses/policy_loss", "losses/value_loss", "losses/entropy"), losses, strict=True))
        metrics["losses/explained_variance"] = explained_variance(self.chunk(batch.values, L).flatten(), returns)
        metrics["charts/learning_rate"] = lr
        self.finish_update(batch)
        return metrics
