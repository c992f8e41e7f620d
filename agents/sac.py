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
each layer of both is one batched matmul. Optimisers are fused Adam.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from agents.config import ConfigError, require
from agents.off_policy import OffPolicyAgent, OffPolicyConfig, adam_step, frozen, polyak_update, target_copy
from agents.on_policy import fused_kwargs
from agents.sac_graph import GraphUpdate
from networks.builder import build_actor, build_critic
from networks.encoders import EnsembleLinear, MLPEncoder
from networks.heads import LOG_STD_MAX, LOG_STD_MIN, SquashedGaussianHead
from networks.manual import ManualMLP, supports_activation

UPDATE_DTYPES = ("float32", "bfloat16", "auto")


def update_dtype(name: str, device: torch.device) -> torch.dtype:
    """The matmul dtype `--update-dtype NAME` means on `device`: auto is bfloat16 on CPUs with
    native bfloat16 matmuls (AVX512-BF16 or AMX), float32 elsewhere (and on GPUs)."""
    if name == "auto":
        cpu = getattr(torch, "cpu", None)
        native = any(getattr(cpu, f, lambda: False)() for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))
        name = "bfloat16" if device.type == "cpu" and native else "float32"
    return getattr(torch, name)


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
    fused_update: bool = True
    """Run the gradient step with hand-written backward passes (`networks.manual`) instead of
    autograd: the same update, fewer operations. MLP networks (relu or tanh) on flat Box
    observations only; other networks use autograd."""
    update_dtype: str = "float32"
    """Matmul dtype of the fused update's hidden layers: float32; bfloat16 (mixed precision:
    float32 master weights, optimiser state, narrow input and output layers, losses; 2-3x
    faster matmuls on CPUs with AVX512-BF16 or AMX, slower on others); or auto: bfloat16 where
    the CPU has those."""
    compile_update: bool = False
    """Compile the fused update's whole gradient step (both Adam steps included) with
    torch.compile (`agents/sac_graph.py`): one call per gradient step instead of about 170
    operations. The first run compiles for tens of seconds (TorchInductor caches the result on
    disk for later runs); where compiling fails the run warns and keeps the fused update. No
    effect where the fused update does not run (like update_dtype auto)."""

    def validate(self) -> None:
        super().validate()
        require(self.ent_coef is None or self.ent_coef >= 0, "ent_coef", "zero or positive, or none", self.ent_coef)
        require(self.ent_coef_init > 0, "ent_coef_init", "positive", self.ent_coef_init)
        require(self.target_update_interval > 0, "target_update_interval", "positive", self.target_update_interval)
        require(self.n_critics > 0, "n_critics", "positive", self.n_critics)
        dtypes = ", ".join(UPDATE_DTYPES)
        require(self.update_dtype in UPDATE_DTYPES, "update_dtype", f"one of {dtypes}", self.update_dtype)


class SAC(OffPolicyAgent):
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
    ):
        super().__init__(config, observation_space, action_space, num_envs, device, seed)
        net = config.network
        self.actor = build_actor(observation_space, action_space, net, squashed_gaussian=True).to(self.device)
        self.critic = build_critic(observation_space, action_space, net, config.n_critics).to(self.device)
        self.critic_target = target_copy(self.critic)
        fused = fused_kwargs(self.device)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=config.learning_rate, **fused)
        self.tune_alpha = config.ent_coef is None
        init = config.ent_coef_init if self.tune_alpha else max(config.ent_coef, 1e-30)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(init), device=self.device), requires_grad=self.tune_alpha)
        self.target_entropy = (
            float(-action_space.shape[0]) if config.target_entropy is None else float(config.target_entropy)
        )
        actor_params = list(self.actor.parameters()) + ([self.log_alpha] if self.tune_alpha else [])
        self.actor_optimizer = torch.optim.Adam(actor_params, lr=config.learning_rate, **fused)
        self._critic_params = list(self.critic.parameters())
        self._target_params = list(self.critic_target.parameters())
        self.fused = FusedUpdate(self) if config.fused_update and FusedUpdate.supports(self) else None
        if self.fused is None and config.update_dtype == "bfloat16":
            raise ConfigError(
                f"--update-dtype {config.update_dtype} needs the fused update (--fused-update, MLP networks with relu "
                "or tanh on flat Box observations)"
            )

    def modules(self) -> dict[str, nn.Module]:
        return {"actor": self.actor, "critic": self.critic, "critic_target": self.critic_target}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"critic_optimizer": self.critic_optimizer, "actor_optimizer": self.actor_optimizer}

    @torch.no_grad()
    def explore(self, obs: torch.Tensor, progress: float) -> torch.Tensor:
        if self.fused is not None:  # the same draw, without the modules' call overhead
            return self.to_env(self.fused.sample_action(obs, self.generator))
        return self.to_env(self.actor.sample_action(obs, self.generator))

    @torch.no_grad()
    def predict(
        self, obs: torch.Tensor, deterministic: bool = True, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if deterministic:
            return self.to_env(self.actor.mode(obs))
        return self.to_env(self.actor.sample_action(obs, generator or self.generator))

    def train(self, buffer: Any, gradient_steps: int, progress: float, global_step: int) -> dict[str, Any]:
        if self.fused is not None:
            return self.fused.train(buffer, gradient_steps)
        cfg = self.config
        for _ in range(gradient_steps):
            batch = buffer.sample(cfg.batch_size, self.generator)
            actions = self.from_env(batch.actions)
            pi_actions, log_prob = self.actor.sample(batch.obs, self.generator)
            alpha = self.log_alpha.detach().exp()

            with torch.no_grad():
                next_actions, next_log_prob = self.actor.sample(batch.next_obs, self.generator)
                next_q = self.critic_target(batch.next_obs, next_actions).min(dim=0).values
                target = batch.rewards + batch.discounts * (next_q - alpha * next_log_prob)
            q = self.critic(batch.obs, actions)  # [K, B]
            critic_loss = 0.5 * (q - target).square().mean(dim=1).sum()
            self.critic_optimizer.zero_grad(set_to_none=True)
            critic_loss.backward()
            self.critic_optimizer.step()

            with frozen(self.critic):
                q_pi = self.critic(batch.obs, pi_actions).min(dim=0).values
            actor_loss = (alpha * log_prob - q_pi).mean()
            loss = actor_loss
            if self.tune_alpha:
                alpha_loss = -(self.log_alpha * (log_prob.detach() + self.target_entropy)).mean()
                loss = loss + alpha_loss
            self.actor_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.actor_optimizer.step()

            self.gradient_steps += 1
            if self.gradient_steps % cfg.target_update_interval == 0:
                polyak_update(self._target_params, self._critic_params, cfg.tau)
        return {
            "losses/critic_loss": critic_loss.detach(),
            "losses/actor_loss": actor_loss.detach(),
            "losses/alpha": alpha,
            "losses/entropy": -log_prob.detach().mean(),
        }

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "log_alpha": self.log_alpha.detach().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        if self.fused is not None:
            self.fused.refresh()


class FusedUpdate:
    """SAC's gradient step (the autograd one in `SAC.train`) with hand-written backward passes.

    The same losses and gradients, up to float rounding (tests/test_sac_fused.py compares
    them), in fewer tensor operations and none of autograd's bookkeeping: the actor runs once
    on obs and next obs concatenated; the critics' backward for the actor loss computes only
    the action gradient; the squashed Gaussian's backward is written out:
      u = mean + std * eps, a = tanh(u),
      log pi = sum(-eps^2/2 - log std - log(2 pi)/2 - log(1 - a^2))
      d log pi / du = 2a,  du/d mean = 1,  du/d log std = std * eps,  d log pi / d log std = -1
    (eps held fixed, as reparameterised sampling does; no gradient where log std is clamped).
    The optimisers are the agent's fused Adams, reading the `.grad` this writes.
    """

    @staticmethod
    def supports(agent: SAC) -> bool:
        """MLP actor and critics on flat observations, with an activation ManualMLP knows."""
        return (
            isinstance(agent.actor.encoder, MLPEncoder)
            and agent.actor.encoder.extractor is None
            and isinstance(agent.critic.flatten, nn.Flatten)
            and supports_activation(agent.config.network.activation)
        )

    def __init__(self, agent: SAC):
        self.agent = agent
        dtype = update_dtype(agent.config.update_dtype, agent.device)
        act = agent.config.network.activation
        actor_layers = [m for m in agent.actor.encoder.net if isinstance(m, EnsembleLinear)] + [agent.actor.head.linear]
        self.actor = ManualMLP(actor_layers, act, dtype)
        self.acting = ManualMLP(actor_layers, act)  # float32, for exploration
        self.critic = ManualMLP(self._critic_layers(agent.critic), act, dtype)
        self.target = ManualMLP(self._critic_layers(agent.critic_target), act, dtype)
        self.dtype = dtype
        self.obs_dim = math.prod(agent.observation_space.shape)
        self.action_dim = agent.actor.head.action_dim
        self.entropy_target = torch.tensor(agent.target_entropy, device=agent.device)
        self.alpha_grad = torch.zeros((), device=agent.device)
        self.graph = GraphUpdate(self) if agent.config.compile_update else None

    @staticmethod
    def _critic_layers(critic: nn.Module) -> list[nn.Module]:
        return [m for m in critic.trunk.net if isinstance(m, EnsembleLinear)] + [critic.out]

    def sample_action(self, obs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """`agent.actor.sample_action(obs, generator)`, the same float32 computation and draw, as
        plain tensor calls: a 2-layer actor's forward through its modules costs about as much
        Python as the arithmetic of one observation."""
        params = self.acting.forward(obs.flatten(1).float())[0][0]
        return self.agent.actor.head.sample_action(params, generator)

    def refresh(self) -> None:
        """Re-cast the compute copies of every network (mixed precision; after a load)."""
        for net in (self.actor, self.critic, self.target):
            net.refresh()
        if self.graph is not None:
            self.graph.refresh()

    def train(self, buffer: Any, gradient_steps: int) -> dict[str, Any]:
        if self.graph is not None and self.graph.ready():
            metrics = self.graph.train(buffer, gradient_steps)
            if metrics is not None:
                return metrics
            self.graph = None  # compiling failed (warned): the same step, uncompiled
        agent, cfg = self.agent, self.agent.config
        A, gen = self.action_dim, agent.generator
        for _ in range(gradient_steps):
            batch = buffer.sample(cfg.batch_size, gen)
            B = batch.obs.shape[0]
            alpha = agent.log_alpha.detach().exp()

            # the actor on obs (for its loss) and next obs (for the critics' targets) at once
            obs = batch.obs.flatten(1).float()
            next_obs = batch.next_obs.flatten(1).float()
            out, actor_tape = self.actor.forward(torch.cat([obs, next_obs]))
            out = out[0]
            mean, raw_log_std = out[:, :A], out[:, A:]
            log_std = raw_log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
            std = log_std.exp()
            eps = torch.randn(mean.shape, generator=gen, device=mean.device)
            u = torch.addcmul(mean, std, eps)
            a = torch.tanh(u)
            log_prob = SquashedGaussianHead.log_prob_of(eps, log_std, u)  # [2B]

            # critics towards r + d (min_k Q'_k(s', a') - alpha log pi(a'|s'))
            q_next, _ = self.target.forward(torch.cat([next_obs, a[B:]], dim=1))
            next_v = q_next.squeeze(-1).min(dim=0).values - alpha * log_prob[B:]
            target = torch.addcmul(batch.rewards, batch.discounts, next_v)
            q, critic_tape = self.critic.forward(torch.cat([obs, agent.from_env(batch.actions)], dim=1))
            error = q.squeeze(-1) - target  # [K, B]
            critic_loss = 0.5 * error.square().mean(dim=1).sum()
            self.critic.backward(critic_tape, (error / B).unsqueeze(-1))
            adam_step(agent.critic_optimizer)
            self.critic.refresh()

            # actor: mean(alpha log pi(a~|s) - min_k Q_k(s, a~)) through the updated critics
            pi_a, pi_log_prob = a[:B], log_prob[:B]
            q_pi, pi_tape = self.critic.forward(torch.cat([obs, pi_a], dim=1))
            q_pi = q_pi.squeeze(-1)
            q_min, argmin = q_pi.min(dim=0)
            actor_loss = (alpha * pi_log_prob - q_min).mean()
            grad_q = torch.zeros_like(q_pi).scatter_(0, argmin.unsqueeze(0), -1.0 / B)
            actions = slice(self.obs_dim, None)
            grad_a = self.critic.backward(pi_tape, grad_q.unsqueeze(-1), params=False, input_columns=actions)
            grad_log_prob = alpha / B
            grad_u = grad_a.float().sum(dim=0) * (1.0 - pi_a.square()) + (2.0 * grad_log_prob) * pi_a
            in_range = (raw_log_std[:B] >= LOG_STD_MIN) & (raw_log_std[:B] <= LOG_STD_MAX)
            grad_log_std = (grad_u * std[:B] * eps[:B] - grad_log_prob) * in_range
            grad_out = torch.cat([grad_u, grad_log_std], dim=1).unsqueeze(0)
            self.actor.backward(actor_tape.rows(B), grad_out)
            if agent.tune_alpha:
                self.alpha_grad.copy_(-(pi_log_prob + self.entropy_target).mean())
                agent.log_alpha.grad = self.alpha_grad
            adam_step(agent.actor_optimizer)
            self.actor.refresh()

            agent.gradient_steps += 1
            if agent.gradient_steps % cfg.target_update_interval == 0:
                polyak_update(agent._target_params, agent._critic_params, cfg.tau)
                self.target.refresh()
        return {
            "losses/critic_loss": critic_loss,
            "losses/actor_loss": actor_loss,
            "losses/alpha": alpha,
            "losses/entropy": -pi_log_prob.mean(),
        }
