"""What PPO and A2C share: config fields, acting, normalisation, advantages and state.

An on-policy agent owns its actor-critic network, its optimiser, its normalisers and
the random generator it samples actions with. Runners call `act` and `value` while
collecting a `Rollout`, then `update(rollout, progress)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import torch

from agents.advantages import compute_gae
from agents.batch import Rollout
from agents.config import ConfigError, require, require_fraction, require_non_negative, require_positive
from agents.normalize import ObservationNormalizer, RewardScaler
from agents.schedules import Schedule
from networks import NetworkConfig, build_actor_critic
from networks.actor_critic import PolicyOutput


@dataclass
class OnPolicyConfig:
    """Hyperparameters every on-policy actor-critic agent has."""

    n_steps: int = 2048
    """Steps each env takes per rollout; one update uses n_steps x num_envs transitions."""
    learning_rate: float = 3e-4
    """Optimiser step size at the start of training."""
    lr_schedule: Schedule = "constant"
    """How the learning rate changes over training: constant, or linear decay to 0."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda: 0 is one-step TD, 1 is Monte Carlo bootstrapped at the rollout's end."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus in the loss."""
    vf_coef: float = 0.5
    """Weight of the value loss in the loss."""
    max_grad_norm: float = 0.5
    """Clip the global gradient norm to this value."""
    normalize_advantage: bool = True
    """Standardise advantages (per minibatch) before the policy loss."""
    normalize_obs: bool = False
    """Standardise observations with running statistics (saved with the agent, frozen in eval)."""
    normalize_reward: bool = False
    """Divide rewards by the running std of the discounted return (training only)."""
    clip_obs: float = 10.0
    """Clip normalised observations to [-clip_obs, clip_obs]."""
    clip_reward: float = 10.0
    """Clip normalised rewards to [-clip_reward, clip_reward]."""
    network: NetworkConfig = field(default_factory=NetworkConfig)
    """Policy and value network architecture."""

    def validate(self) -> None:
        """Raise ConfigError naming the first value that cannot work."""
        require_positive(self, "n_steps", "learning_rate", "max_grad_norm", "clip_obs", "clip_reward")
        require_fraction(self, "gamma", "gae_lambda")
        require_non_negative(self, "ent_coef", "vf_coef")
        sizes = self.network.hidden_sizes
        require(len(sizes) > 0 and all(s > 0 for s in sizes), "hidden_sizes", "positive layer widths", sizes)


class OnPolicyAgent:
    """Acting, value estimates, normalisation, advantages and state shared by PPO and A2C."""

    def __init__(
        self,
        config: OnPolicyConfig,
        observation_space: gym.Space,
        action_space: gym.Space,
        num_envs: int,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ):
        config.validate()
        self.config = config
        self.device = torch.device(device)
        self.net = build_actor_critic(observation_space, action_space, config.network).to(self.device)
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.obs_normalizer: ObservationNormalizer | None = None
        if config.normalize_obs:
            if not isinstance(observation_space, gym.spaces.Box):
                raise ConfigError(f"--normalize-obs needs Box observations, not {observation_space}")
            self.obs_normalizer = ObservationNormalizer(observation_space.shape, config.clip_obs).to(self.device)
        self.reward_scaler: RewardScaler | None = None
        if config.normalize_reward:
            self.reward_scaler = RewardScaler(num_envs, config.gamma, config.clip_reward).to(self.device)
        self.optimizer = self.make_optimizer()

    def make_optimizer(self) -> torch.optim.Optimizer:
        raise NotImplementedError

    def preprocess(self, obs: torch.Tensor) -> torch.Tensor:
        """What the network sees: observations normalised with the current, frozen statistics."""
        return obs if self.obs_normalizer is None else self.obs_normalizer(obs)

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> PolicyOutput:
        """Actions [N, ...], their log-probabilities [N] and values [N] for raw observations [N, ...]."""
        return self.net.act(self.preprocess(obs), deterministic, self.generator if generator is None else generator)

    def predict(
        self, obs: torch.Tensor, deterministic: bool = True, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Actions [N, ...] for raw observations [N, ...] (evaluation)."""
        return self.act(obs, deterministic, generator).action

    @torch.no_grad()
    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """State values [N] of raw observations [N, ...]."""
        return self.net.value(self.preprocess(obs))

    def advantages(self, batch: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        """GAE advantages and value targets [T, N], on scaled rewards when reward normalisation is on."""
        rewards = batch.rewards
        if self.reward_scaler is not None:
            rewards = self.reward_scaler(rewards, batch.terminated | batch.truncated)
        cfg = self.config
        return compute_gae(
            rewards, batch.values, batch.next_values, batch.terminated, batch.truncated, cfg.gamma, cfg.gae_lambda
        )

    def finish_update(self, batch: Rollout) -> None:
        """Fold the rollout's observations into the normaliser, after the update used the old statistics."""
        if self.obs_normalizer is not None:
            self.obs_normalizer.update(batch.obs.flatten(0, 1))

    def set_learning_rate(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def update(self, batch: Rollout, progress: float) -> dict[str, float | torch.Tensor]:
        """Learn from one rollout; `progress` in [0, 1] drives the schedules. Returns metrics as
        floats or 0-d tensors (left on the device: the trainer reads them only when it logs)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        state = {
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "generator_device": self.device.type,
        }
        if self.obs_normalizer is not None:
            state["obs_normalizer"] = self.obs_normalizer.state_dict()
        if self.reward_scaler is not None:
            state["reward_scaler"] = self.reward_scaler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("generator_device") == self.device.type:  # an agent moved to another device draws anew
            self.generator.set_state(state["generator"])
        if self.obs_normalizer is not None:
            self.obs_normalizer.load_state_dict(state["obs_normalizer"])
        if self.reward_scaler is not None:
            self.reward_scaler.load_state_dict(state["reward_scaler"])


def fused_kwargs(device: torch.device) -> dict[str, bool]:
    """Use the fused optimiser kernels where torch has them (CPU and CUDA): one kernel per step."""
    return {"fused": True} if device.type in ("cpu", "cuda") else {"foreach": True}
