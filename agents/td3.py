"""TD3 (Fujimoto et al. 2018) and DDPG (Lillicrap et al. 2016) as one agent.

One gradient step:
  critics: minimise sum_k (Q_k(s, a) - y)^2 with y = R + d * min_k Q_target_k(s', a'),
           a' = clip(actor_target(s') + clip(N(0, target_policy_noise), +-target_noise_clip), -1, 1)
  every policy_delay-th step:
           actor: maximise Q_1(s, actor(s)) (the critics get no gradient from it), then
           Polyak-average the actor's and the critics' targets.
Exploration adds N(0, exploration_noise) to the actor's action in [-1, 1]^A.

DDPG is this with one critic, no delay and no target smoothing (`DDPGConfig`), as in
Stable-Baselines3; `drl train ddpg` selects it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import gymnasium as gym
import torch
from torch import nn

from agents.batch import Metrics, Progress, Transitions
from agents.config import require_non_negative, require_positive
from agents.deploy import RescaledActorPolicy
from agents.off_policy import OffPolicyBase, OffPolicyConfig
from agents.optim import adam, compiled, descend, detached_call, polyak_update, target_copy
from networks import NetworkConfig
from networks.builder import build_actor, build_critic


def td3_network() -> NetworkConfig:
    """The TD3 paper's (and Stable-Baselines3's) architecture: ReLU layers of 400 and 300."""
    return NetworkConfig(hidden_sizes=(400, 300), activation="relu", ortho_init=False)


@dataclass
class TD3Config(OffPolicyConfig):
    """TD3 hyperparameters; defaults are Stable-Baselines3's, except Gaussian exploration noise
    of 0.1 (SB3 has none by default; the zoo and the TD3 paper use 0.1)."""

    learning_rate: float = 1e-3
    """Optimiser step size (actor and critics)."""
    policy_delay: int = 2
    """Critic steps per actor (and target) update."""
    target_policy_noise: float = 0.2
    """Std of the Gaussian noise added to target actions (target policy smoothing; 0: none)."""
    target_noise_clip: float = 0.5
    """Clip the target policy noise to +- this."""
    exploration_noise: float = 0.1
    """Std of the Gaussian noise added to actions while collecting, in [-1, 1] action units."""
    n_critics: int = 2
    """Critics in the ensemble; targets use their minimum."""
    network: NetworkConfig = field(default_factory=td3_network)
    """Actor and critic architecture."""

    def validate(self) -> None:
        super().validate()
        require_positive(self, "policy_delay", "n_critics")
        require_non_negative(self, "target_policy_noise", "target_noise_clip", "exploration_noise")


@dataclass
class DDPGConfig(TD3Config):
    """DDPG: TD3 with one critic, no policy delay and no target policy smoothing. Exploration
    noise is TD3's 0.1 (Stable-Baselines3's DDPG has none by default; the zoo uses 0.1)."""

    policy_delay: int = 1
    """Critic steps per actor (and target) update."""
    target_policy_noise: float = 0.0
    """Std of the Gaussian noise added to target actions (0: none, as DDPG)."""
    target_noise_clip: float = 0.0
    """Clip the target policy noise to +- this."""
    n_critics: int = 1
    """Critics in the ensemble."""


class TD3(OffPolicyBase):
    """The TD3 (or, with DDPGConfig, DDPG) agent; see the module docstring."""

    config: TD3Config

    def __init__(
        self,
        config: TD3Config,
        observation_space: gym.Space,
        action_space: gym.Space,
        num_envs: int,
        device: torch.device | str = "cpu",
        seed: int = 0,
        compile: bool = False,
    ):
        super().__init__(config, observation_space, action_space, num_envs, device, seed, compile)
        net = config.network
        self.actor = build_actor(observation_space, action_space, net, squashed_gaussian=False).to(self.device)
        self.actor_target = target_copy(self.actor)
        self.critic = build_critic(observation_space, action_space, net, config.n_critics).to(self.device)
        self.critic_target = target_copy(self.critic)
        self.actor_optimizer = adam(self.actor.parameters(), config.learning_rate, self.device, compile)
        self.critic_optimizer = adam(self.critic.parameters(), config.learning_rate, self.device, compile)
        self._online = list(self.actor.parameters()) + list(self.critic.parameters())
        self._targets = list(self.actor_target.parameters()) + list(self.critic_target.parameters())
        self._critic_step = compiled(self.critic_step, compile, self.device)
        self._actor_step = compiled(self.actor_step, compile, self.device)

    def modules(self) -> dict[str, nn.Module]:
        return {
            "actor": self.actor,
            "actor_target": self.actor_target,
            "critic": self.critic,
            "critic_target": self.critic_target,
        }

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor_optimizer": self.actor_optimizer, "critic_optimizer": self.critic_optimizer}

    def _noisy(self, action: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(action.shape, generator=generator, device=action.device)
        return (action + self.config.exploration_noise * noise).clamp(-1.0, 1.0)

    @torch.no_grad()
    def explore(self, obs: torch.Tensor, progress: Progress) -> torch.Tensor:
        action = self.actor(obs)
        if self.config.exploration_noise > 0:
            action = self._noisy(action, self.generator)
        return self.to_env(action)

    @torch.no_grad()
    def predict(
        self, obs: torch.Tensor, deterministic: bool = True, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        action = self.actor(obs)
        if not deterministic and self.config.exploration_noise > 0:
            action = self._noisy(action, generator or self.generator)
        return self.to_env(action)

    def deterministic_policy(self) -> nn.Module:
        return RescaledActorPolicy(self.actor, self.low, self.high)

    def update(self, batch: Transitions, progress: Progress) -> tuple[Metrics, torch.Tensor]:
        cfg = self.config
        self.gradient_steps += 1
        noise = None  # target policy smoothing: drawn here, from the agent's generator
        if cfg.target_policy_noise > 0:
            noise = torch.randn(batch.actions.shape, generator=self.generator, device=self.device)
        metrics, td_errors = self._critic_step(batch._replace(actions=self.from_env(batch.actions)), noise)
        if self.gradient_steps % cfg.policy_delay == 0:
            metrics["losses/actor_loss"] = self._actor_step(batch.obs)
        return metrics, td_errors

    def critic_step(self, batch: Transitions, noise: torch.Tensor | None) -> tuple[Metrics, torch.Tensor]:
        """The critics' step on a batch with actions in [-1, 1]^A; `noise` [B, A] is a standard
        normal draw for target policy smoothing (none: no smoothing)."""
        cfg = self.config
        with torch.no_grad():
            next_actions = self.actor_target(batch.next_obs)
            if noise is not None:
                smoothing = (cfg.target_policy_noise * noise).clamp(-cfg.target_noise_clip, cfg.target_noise_clip)
                next_actions = (next_actions + smoothing).clamp(-1.0, 1.0)
            next_q = self.critic_target(batch.next_obs, next_actions).min(dim=0).values
            target = batch.rewards + batch.discounts * next_q
        td = self.critic(batch.obs, batch.actions) - target  # [K, B]
        critic_loss = (batch.weights * td.square()).mean(dim=1).sum()
        descend(self.critic_optimizer, critic_loss)
        return {"losses/critic_loss": critic_loss.detach()}, td.detach().abs().mean(dim=0)

    def actor_step(self, obs: torch.Tensor) -> torch.Tensor:
        """The actor's step: maximise the first critic's value of its actions (the critics'
        weights get no gradient from it); then the targets' Polyak step. Returns the loss."""
        actor_loss = -detached_call(self.critic, obs, self.actor(obs))[0].mean()
        descend(self.actor_optimizer, actor_loss)
        polyak_update(self._targets, self._online, self.config.tau)
        return actor_loss.detach()
