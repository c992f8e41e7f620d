"""Deep Q-Networks (Mnih et al. 2015), with the usual improvements as flags.

One gradient step minimises the Huber loss between Q(s, a) and the target
R + d * max_a' Q_target(s', a'), where R is the n-step return and d is gamma^m, or 0
after a termination. Flags: double Q-learning (van Hasselt et al. 2016: the online net
picks a', the target net values it), a dueling head (Wang et al. 2016), n-step returns
and prioritised replay (Schaul et al. 2016). With all four on it is the well-known
strong combination of four of Rainbow's components (Hessel et al. 2018).

Exploration is epsilon-greedy, linear from exploration_initial_eps to
exploration_final_eps over the first exploration_fraction of training. The target
network follows the online one every target_update_interval env steps (a copy at
tau = 1, Polyak averaging below), as Stable-Baselines3 counts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import torch
from torch import nn

import envs
from agents.batch import Metrics, Progress, Transitions
from agents.config import require, require_fraction, require_positive
from agents.deploy import GreedyQPolicy
from agents.off_policy import OffPolicyBase, OffPolicyConfig
from agents.optim import adam, compiled, descend, polyak_update, target_copy
from networks import NetworkConfig
from networks.builder import build_q_network


def dqn_network() -> NetworkConfig:
    """Stable-Baselines3's DQN default: two ReLU layers of 64."""
    return NetworkConfig(hidden_sizes=(64, 64), activation="relu", ortho_init=False)


@dataclass
class DQNConfig(OffPolicyConfig):
    """DQN hyperparameters; defaults are Stable-Baselines3's."""

    learning_rate: float = 1e-4
    """Optimiser step size."""
    batch_size: int = 32
    """Transitions per gradient step."""
    tau: float = 1.0
    """Polyak coefficient of each target update (1: copy the online network)."""
    train_every: int = 4
    """Env steps (summed over envs, rounded up to whole steps of all envs) between training phases."""
    utd_ratio: float = 0.25
    """Update-to-data ratio: gradient steps per env step collected, run at each training phase."""
    target_update_interval: int = 10_000
    """Env steps (summed over envs) between target network updates."""
    exploration_fraction: float = 0.1
    """Fraction of training over which epsilon decays linearly."""
    exploration_initial_eps: float = 1.0
    """Epsilon at the start of training."""
    exploration_final_eps: float = 0.05
    """Epsilon after the decay (and for stochastic evaluation)."""
    max_grad_norm: float = 10.0
    """Clip the global gradient norm to this value."""
    double_q: bool = False
    """Double Q-learning: the online network picks the next action, the target network values it."""
    dueling: bool = False
    """Dueling head: separate value and advantage streams in the last hidden layer."""
    network: NetworkConfig = field(default_factory=dqn_network)
    """Q-network architecture."""

    def validate(self) -> None:
        super().validate()
        require_positive(self, "target_update_interval", "max_grad_norm")
        require_fraction(self, "exploration_fraction", "exploration_initial_eps", "exploration_final_eps")
        require(not self.dueling or len(self.network.hidden_sizes) >= 1, "dueling", "used with hidden layers", True)


class DQN(OffPolicyBase):
    """The DQN agent; see the module docstring."""

    config: DQNConfig

    def __init__(
        self,
        config: DQNConfig,
        observation_space: gym.Space,
        action_space: gym.Space,
        num_envs: int,
        device: torch.device | str = "cpu",
        seed: int = 0,
        compile: bool = False,
    ):
        super().__init__(config, observation_space, action_space, num_envs, device, seed, compile)
        layout = envs.packing(observation_space)
        self.q_net = build_q_network(observation_space, action_space, config.network, config.dueling, layout)
        self.q_net.to(self.device)
        self.q_target = target_copy(self.q_net)
        self.optimizer = adam(self.q_net.parameters(), config.learning_rate, self.device, compile)
        self.target_updates = 0  # target updates done so far, one per target_update_interval env steps
        self._params = list(self.q_net.parameters())
        self._gradient_step = compiled(self.gradient_step, compile, self.device)

    def modules(self) -> dict[str, nn.Module]:
        return {"q_net": self.q_net, "q_target": self.q_target}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.optimizer}

    def epsilon(self, progress: float) -> float:
        """Epsilon at the fraction `progress` of training."""
        cfg = self.config
        fraction = min(1.0, progress / cfg.exploration_fraction) if cfg.exploration_fraction > 0 else 1.0
        return cfg.exploration_initial_eps + fraction * (cfg.exploration_final_eps - cfg.exploration_initial_eps)

    @torch.no_grad()
    def _epsilon_greedy(self, obs: torch.Tensor, epsilon: float, generator: torch.Generator) -> torch.Tensor:
        greedy = self.q_net(obs).argmax(dim=-1)
        n = greedy.shape[0]
        random = torch.randint(0, int(self.action_space.n), (n,), generator=generator, device=self.device)
        explore = torch.rand(n, generator=generator, device=self.device) < epsilon
        return torch.where(explore, random, greedy)

    def explore(self, obs: torch.Tensor, progress: Progress) -> torch.Tensor:
        return self._epsilon_greedy(obs, self.epsilon(progress.fraction), self.generator)

    @torch.no_grad()
    def predict(
        self, obs: torch.Tensor, deterministic: bool = True, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if deterministic:
            return self.q_net(obs).argmax(dim=-1)
        return self._epsilon_greedy(obs, self.config.exploration_final_eps, generator or self.generator)

    def deterministic_policy(self) -> nn.Module:
        return GreedyQPolicy(self.q_net)

    def _sync_target(self, env_steps: int) -> None:
        """Bring the target network up to date: one update per target_update_interval env steps."""
        due = env_steps // self.config.target_update_interval - self.target_updates
        if due > 0:
            # k updates in a row toward the same online weights: one of weight 1 - (1 - tau)^k
            tau = 1.0 - (1.0 - self.config.tau) ** due
            polyak_update(list(self.q_target.parameters()), self._params, tau)
            self.target_updates += due

    def update(self, batch: Transitions, progress: Progress) -> tuple[Metrics, torch.Tensor]:
        self._sync_target(progress.step)
        metrics, td_errors = self._gradient_step(batch)
        self.gradient_steps += 1
        metrics["charts/epsilon"] = self.epsilon(progress.fraction)
        return metrics, td_errors

    def gradient_step(self, batch: Transitions) -> tuple[Metrics, torch.Tensor]:
        """One step of the weighted Huber loss between Q(s, a) and the (double) Q-learning target."""
        with torch.no_grad():
            next_q = self.q_target(batch.next_obs)
            if self.config.double_q:  # the online net picks the action, the target net values it
                best = self.q_net(batch.next_obs).argmax(dim=-1, keepdim=True)
                next_value = next_q.gather(1, best).squeeze(1)
            else:
                next_value = next_q.max(dim=-1).values
            target = batch.rewards + batch.discounts * next_value
        q_taken = self.q_net(batch.obs).gather(1, batch.actions.long().unsqueeze(1)).squeeze(1)
        loss = (nn.functional.smooth_l1_loss(q_taken, target, reduction="none") * batch.weights).mean()
        descend(self.optimizer, loss, self.config.max_grad_norm)
        metrics = {"losses/td_loss": loss.detach(), "losses/q_values": q_taken.detach().mean()}
        return metrics, (q_taken - target).detach()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "target_updates": self.target_updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.target_updates = int(state["target_updates"])
