"""Proximal Policy Optimization with a clipped surrogate objective (Schulman et al. 2017).

One update: advantages by GAE over the rollout, then `n_epochs` passes over shuffled
minibatches, each step minimising

    policy loss  -min(r A, clip(r, 1 - eps, 1 + eps) A),  r = pi(a|s) / pi_old(a|s)
  + vf_coef    * value loss (optionally clipped around the old values)
  - ent_coef   * entropy,

with global gradient-norm clipping, optional early stop on the approximate KL divergence,
and linear annealing of the learning rate and the clip range when asked.

In DDP training (`distributed`, see `agents.on_policy`) each rank runs the same number of
minibatches over its own rollout; gradients are averaged over the ranks at every step, and the
approximate KL of the target-KL check is averaged too, so every rank stops at the same
minibatch. Advantages are standardised per minibatch per rank (over that rank's share of the
global minibatch), not over the global minibatch: it would cost two more collectives per step,
and each share is a sample of the same rollout, so its mean and spread estimate the global ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agents.advantages import explained_variance, standardize
from agents.batch import Metrics, Progress, Rollout
from agents.config import require, require_positive
from agents.on_policy import OnPolicyBase, OnPolicyConfig
from agents.optim import adam, all_ranks_mean, compiled, descend, set_learning_rate
from agents.schedules import Schedule, scheduled


def take_chunks(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x[:, idx] for x [L, chunks, ...]: the chunks of a minibatch. Through index_select, which
    copies whole rows: advanced indexing took 2.2 ms for a PPO Atari minibatch of frames (256 of
    [1, 1024, 4, 84, 84] uint8) on the 2-core CPU of the benchmarks, index_select 0.14 ms."""
    if x.shape[0] == 1:  # (index_select along dim 1 behind a dim of 1 took 1.1 ms)
        return x[0].index_select(0, idx).unsqueeze(0)
    return x.index_select(1, idx)


@dataclass
class PPOConfig(OnPolicyConfig):
    """PPO hyperparameters; defaults are Stable-Baselines3's, per env step.

    With n_steps none an update uses SB3's 2048 transitions whatever num_envs (256 steps in
    each of 8 envs; 683 x 3 = 2049 where num_envs does not divide 2048), so updates, epochs
    and minibatches of 64 per env step are SB3's. The one difference left is that GAE sees
    rollouts of 2048 / num_envs steps per env rather than 2048 on one env.
    """

    batch_size: int = 64
    """Minibatch size of each gradient step."""
    n_epochs: int = 10
    """Passes over the rollout per update."""
    clip_range: float = 0.2
    """Clip the probability ratio to [1 - clip_range, 1 + clip_range]."""
    clip_schedule: Schedule = "constant"
    """How the clip range changes over training: constant, or linear decay to 0."""
    clip_range_vf: float | None = None
    """Clip value predictions to old value +- this (OpenAI baselines' PPO2); none disables."""
    target_kl: float | None = None
    """Stop the update's epochs early once the approximate KL exceeds 1.5 x this; none disables."""
    adam_eps: float = 1e-5
    """Epsilon of the Adam optimiser."""

    def validate(self) -> None:
        super().validate()
        require_positive(self, "batch_size", "n_epochs", "clip_range", "adam_eps")
        for name in ("clip_range_vf", "target_kl"):
            value = getattr(self, name)
            require(value is None or value > 0, name, "positive or none", value)


class PPO(OnPolicyBase):
    """The PPO agent: acts with its actor-critic and learns from on-policy rollouts."""

    config: PPOConfig

    def make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        # a compiled step reads the learning rate from a tensor, so that a schedule does not recompile it
        lr = torch.tensor(cfg.learning_rate) if self.compile else cfg.learning_rate
        optimizer = adam(self.net.parameters(), lr, self.device, self.compile, eps=cfg.adam_eps)
        self._gradient_step = compiled(self.gradient_step, self.compile, self.device)
        self._minibatch_stats = compiled(self.minibatch_stats, self.compile, self.device)
        return optimizer

    def update(self, batch: Rollout, progress: Progress) -> Metrics:
        cfg = self.config
        lr = scheduled(cfg.learning_rate, cfg.lr_schedule, progress.fraction)
        clip = scheduled(cfg.clip_range, cfg.clip_schedule, progress.fraction)
        set_learning_rate(self.optimizer, lr)
        clip_t = torch.tensor(clip, device=self.device)  # a tensor: a compiled loss is not recompiled per value

        advantages, returns = self.advantages(batch)  # [T, N]
        # Work on chunks [L, C]: single transitions (L=1, C=T*N) for feed-forward networks,
        # sequences of L steps for recurrent ones, with the state stored before each.
        L = self.chunk_length(batch.rewards.shape[0])
        sequences = [
            self.chunk(x, L)
            for x in (self.preprocess(batch.obs), batch.actions, batch.log_probs, batch.values, advantages, returns)
        ]
        states = None
        if self.recurrent:
            sequences.append(self.chunk(batch.starts, L))
            states = batch.states[::L].flatten(0, 1)  # [C, S, H]: the state before each chunk
        old_values, returns = batch.values.flatten(), returns.flatten()
        chunks = sequences[0].shape[1]
        chunks_per_batch = max(1, cfg.batch_size // L)

        # A minibatch as large as the rollout is the rollout itself: no shuffling or gathering,
        # and its advantages are standardised once rather than at every epoch (same result).
        full_batch = chunks_per_batch >= chunks
        standardize_each = cfg.normalize_advantage and not full_batch
        if cfg.normalize_advantage and full_batch and advantages.numel() > 1:
            sequences[4] = standardize(sequences[4])

        history = []  # per minibatch: policy, value, entropy losses, approx KL, clip fraction
        stopped_early = False
        for _ in range(cfg.n_epochs):
            if full_batch:
                minibatches = [(sequences, states)]
            else:  # shuffle the chunks once per epoch, then take contiguous slices
                order = torch.randperm(chunks, generator=self.generator, device=self.device)
                minibatches = [
                    ([take_chunks(x, idx) for x in sequences], None if states is None else states[idx])
                    for idx in order.split(chunks_per_batch)
                ]
            for mb, mb_states in minibatches:
                mb_starts = mb[6] if self.recurrent else None
                if cfg.target_kl is not None:  # a step only while the policy stays close to the old one
                    stats = self._minibatch_stats(*mb[:6], mb_states, mb_starts, clip_t, standardize_each)
                    approx_kl = all_ranks_mean(stats[3]) if self.distributed else stats[3]  # all ranks agree
                    if approx_kl.item() > 1.5 * cfg.target_kl:
                        stopped_early = True
                        break
                stats = self._gradient_step(*mb[:6], mb_states, mb_starts, clip_t, standardize_each)
                history.append(stats)
            if stopped_early:
                break

        metrics = {"charts/learning_rate": lr, "charts/clip_range": clip, "losses/stopped_early": float(stopped_early)}
        if history:
            means = torch.stack(history).mean(dim=0)
            names = ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")
            metrics.update({f"losses/{name}": value for name, value in zip(names, means, strict=True)})
        metrics["losses/explained_variance"] = explained_variance(old_values, returns)
        self.finish_update(batch)
        return metrics

    def losses(
        self,
        obs: torch.Tensor,
        actions: torch.Tensor,
        old_log_probs: torch.Tensor,
        old_values: torch.Tensor,
        advantages: torch.Tensor,
        returns: torch.Tensor,
        states: torch.Tensor | None,
        starts: torch.Tensor | None,
        clip: torch.Tensor,
        standardize_advantages: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """PPO's loss on one minibatch of chunks [L, C, ...], and its statistics [5]: policy,
        value and entropy terms, approximate KL and clip fraction."""
        cfg = self.config
        log_probs, entropy, values = self.evaluate_chunks(obs, actions, states, starts)
        old_log_probs, old_values, adv, target = (x.flatten() for x in (old_log_probs, old_values, advantages, returns))
        log_ratio = log_probs - old_log_probs
        ratio = log_ratio.exp()
        if standardize_advantages and adv.numel() > 1:
            adv = standardize(adv)
        policy_loss = -torch.min(adv * ratio, adv * ratio.clamp(1.0 - clip, 1.0 + clip)).mean()

        value_loss = (values - target).square()
        if cfg.clip_range_vf is not None:  # the value may move at most clip_range_vf from its old estimate
            clipped = old_values + (values - old_values).clamp(-cfg.clip_range_vf, cfg.clip_range_vf)
            value_loss = torch.max(value_loss, (clipped - target).square())
        value_loss = value_loss.mean()
        entropy_mean = entropy.mean()
        loss = policy_loss + cfg.vf_coef * value_loss
        if cfg.ent_coef:  # with a zero weight, keep the entropy out of the backward pass
            loss = loss - cfg.ent_coef * entropy_mean

        with torch.no_grad():
            approx_kl = ((ratio - 1.0) - log_ratio).mean()  # Schulman's low-variance estimator
            clip_fraction = ((ratio - 1.0).abs() > clip).float().mean()
            stats = torch.stack([policy_loss, value_loss, entropy_mean, approx_kl, clip_fraction])
        return loss, stats.detach()

    def gradient_step(self, *minibatch: torch.Tensor | bool | None) -> torch.Tensor:
        """One step of the optimiser down `losses(*minibatch)`; returns its statistics."""
        loss, stats = self.losses(*minibatch)
        descend(self.optimizer, loss, self.config.max_grad_norm, self.distributed)
        return stats

    @torch.no_grad()
    def minibatch_stats(self, *minibatch: torch.Tensor | bool | None) -> torch.Tensor:
        """The statistics of `losses(*minibatch)` without a step (the target-KL check)."""
        return self.losses(*minibatch)[1]
