"""Soft Actor-Critic (Haarnoja et al. 2018) for Box actions, as Stable-Baselines3 runs it.

One gradient step, with alpha the entropy coefficient before this step's update:
  critics: minimise 0.5 * sum_k (Q_k(s, a) - y)^2 with
           y = R + d * (min_k Q_target_k(s', a') - alpha log pi(a'|s')), a' ~ pi(s')
  actor:   minimise alpha log pi(a~|s) - min_k Q_k(s, a~), a~ ~ pi(s) reparameterised,
           through the critics just updated (their weights get no gradient from it)
  alpha:   minimise -log(alpha) * (log pi(a~|s) + target_entropy)   (when tuned)
  targets: Polyak averaging every target_update_interval gradient steps.

The actor is a tanh-squashed Gaussian in [-1, 1]^A (log-probabilities corrected for the
squashing), rescaled to the env's bounds. The twin critics are one ensemble module, so
each layer of both is one batched matmul. With `--compile` the gradient step (both losses,
their backward passes, both Adam steps and the targets' Polyak step) runs through
torch.compile; the noise of the reparameterised samples is drawn outside it, from the agent's
generator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from agents.batch import Metrics, Progress, Transitions
from agents.config import require
from agents.deploy import RescaledActorPolicy
from agents.off_policy import OffPolicyBase, OffPolicyConfig
from agents.optim import adam, compiled, descend, detached_call, polyak_update, target_copy
from networks.builder import build_actor, build_critic


@dataclass
class SACConfig(OffPolicyConfig):
    """SAC hyperparameters; defaults are Stable-Baselines3's."""

    ent_coef: float | None = None
    """Fixed entropy coefficient alpha; none: tune alpha towards target_entropy."""
    ent_coef_init: float = 1.0
    """Initial alpha when it is tuned."""
    target_entropy: float | None = None
    """Entropy the tuned alpha aims for; none: minus the number of action dimensions."""
    target_update_interval: int = 1
    """Gradient steps between target critic updates."""
    n_critics: int = 2
    """Critics in the ensemble; targets use their minimum."""

    def validate(self) -> None:
        super().validate()
        require(self.ent_coef is None or self.ent_coef >= 0, "ent_coef", "zero or positive, or none", self.ent_coef)
        require(self.ent_coef_init > 0, "ent_coef_init", "positive", self.ent_coef_init)
        require(self.target_update_interval > 0, "target_update_interval", "positive", self.target_update_interval)
        require(self.n_critics > 0, "n_critics", "positive", self.n_critics)


class SAC(OffPolicyBase):
    """The SAC agent; see the module docstring."""

    config: SACConfig

    def __init__(
        self,
        config: SACConfig,
        observation_space: gym.Space,
        action_space: gym.Space,
        num_envs: int,
        device: torch.device | str = "cpu",
        seed: int = 0,
        compile: bool = False,
    ):
        super().__init__(config, observation_space, action_space, num_envs, device, seed, compile)
        net = config.network
        self.actor = build_actor(observation_space, action_space, net, squashed_gaussian=True).to(self.device)
        self.critic = build_critic(observation_space, action_space, net, config.n_critics).to(self.device)
        self.critic_target = target_copy(self.critic)
        self.critic_optimizer = adam(self.critic.parameters(), config.learning_rate, self.device, compile)
        self.tune_alpha = config.ent_coef is None
        init = config.ent_coef_init if self.tune_alpha else max(config.ent_coef, 1e-30)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(init), device=self.device), requires_grad=self.tune_alpha)
        self.target_entropy = (
            float(-action_space.shape[0]) if config.target_entropy is None else float(config.target_entropy)
        )
        actor_params = list(self.actor.parameters()) + ([self.log_alpha] if self.tune_alpha else [])
        self.actor_optimizer = adam(actor_params, config.learning_rate, self.device, compile)
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())
        self._gradient_step = compiled(self.gradient_step, compile, self.device)

    def modules(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "critic": self.critic, "critic_target": self.critic_target}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"critic_optimizer": self.critic_optimizer, "actor_optimizer": self.actor_optimizer}

    @torch.no_grad()
    def explore(self, obs: torch.Tensor, progress: Progress) -> torch.Tensor:
        return self.to_env(self.actor.sample_action(obs, self.generator))

    @torch.no_grad()
    def predict(
        self, obs: torch.Tensor, deterministic: bool = True, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if deterministic:
            return self.to_env(self.actor.mode(obs))
        return self.to_env(self.actor.sample_action(obs, generator or self.generator))

    def deterministic_policy(self) -> nn.Module:
        return RescaledActorPolicy(self.actor, self.low, self.high)

    def update(self, batch: Transitions, progress: Progress) -> tuple[Metrics, torch.Tensor]:
        B, A = batch.rewards.shape[0], self.actor.head.action_dim
        noise = torch.randn((2, B, A), generator=self.generator, device=self.device)  # for a~ and a'
        self.gradient_steps += 1
        update_targets = self.gradient_steps % self.config.target_update_interval == 0
        return self._gradient_step(batch._replace(actions=self.from_env(batch.actions)), noise, update_targets)

    def gradient_step(
        self, batch: Transitions, noise: torch.Tensor, update_targets: bool
    ) -> tuple[Metrics, torch.Tensor]:
        """The critics' step, then the actor's and alpha's, on a batch with actions in [-1, 1]^A
        and the noise [2, B, A] of the two reparameterised samples; then the target critics'
        Polyak step if `update_targets`."""
        obs, next_obs = batch.obs, batch.next_obs
        alpha = self.log_alpha.detach().exp()
        with torch.no_grad():
            next_actions, next_log_prob = self.actor.squash(next_obs, noise[1])
            next_q = self.critic_target(next_obs, next_actions).min(dim=0).values
            target = batch.rewards + batch.discounts * (next_q - alpha * next_log_prob)
        td = self.critic(obs, batch.actions) - target  # [K, B]
        critic_loss = 0.5 * (batch.weights * td.square()).mean(dim=1).sum()
        descend(self.critic_optimizer, critic_loss)

        pi_actions, log_prob = self.actor.squash(obs, noise[0])
        q_pi = detached_call(self.critic, obs, pi_actions).min(dim=0).values  # through the updated critics
        actor_loss = (alpha * log_prob - q_pi).mean()
        loss = actor_loss
        if self.tune_alpha:
            loss = loss - (self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
        descend(self.actor_optimizer, loss)
        if update_targets:
            polyak_update(self._target_params, self._critic_params, self.config.tau)
        metrics = {
            "losses/critic_loss": critic_loss.detach(),
            "losses/actor_loss": actor_loss.detach(),
            "losses/alpha": alpha,
            "losses/entropy": -log_prob.detach().mean(),
        }
        return metrics, td.detach().abs().mean(dim=0)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "log_alpha": self.log_alpha.detach().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
