"""What PPO and A2C share: config fields, acting, normalisation, advantages and state.

An on-policy agent owns its actor-critic network, its optimiser, its normalisers and
the random generator it samples actions with. Runners call `act` and `value` while
collecting a `Rollout`, then `update(rollout, progress)` (`agents.interface.OnPolicyAgent`).

With a recurrent network (`--recurrent lstm|gru`) `act` and `value` also take the
recurrent state and the episode starts, and updates learn from sequences: the rollout is
cut into chunks of `seq_len` steps per env (the whole rollout by default), each replayed
from the state stored when it was collected, and minibatches are sets of chunks.

In DDP training (`drl train --nproc G`, `runners/distributed.py`) every rank holds a copy of
the agent and collects with its own share of the envs; the runner sets `distributed`, and then
every gradient is averaged over the ranks (`agents.optim.descend`) and the normalisers fold in
all ranks' batches, so the copies stay equal. What stays per rank: the per-env running returns
of reward scaling, and advantage standardisation (over each rank's own minibatch).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import gymnasium as gym
import torch
from torch import nn

import envs
from agents.advantages import compute_gae
from agents.batch import Metrics, Progress, Rollout
from agents.config import ConfigError, require, require_fraction, require_non_negative, require_positive
from agents.deploy import ActorCriticPolicy, RecurrentActorCriticPolicy
from agents.normalize import ObservationNormalizer, RewardScaler
from agents.schedules import Schedule
from networks import NetworkConfig, build_actor_critic
from networks.actor_critic import PolicyOutput, RecurrentActorCritic
from networks.cnn import frozen_weights


@dataclass
class OnPolicyConfig:
    """Hyperparameters every on-policy actor-critic agent has.

    Defaults follow Stable-Baselines3's per env step, whatever num_envs: SB3's defaults run
    one env, so its n_steps is also the transitions per update. With n_steps none, those
    transitions (`sb3_transitions`) are shared among the envs, so that updates per env step
    match SB3's; a given n_steps is steps per env, as in SB3 with several envs.
    """

    sb3_transitions: ClassVar[int] = 2048
    """Transitions per update of SB3's defaults (its n_steps on its default single env)."""

    n_steps: int | None = None
    """Steps each env takes per rollout; one update uses n_steps x num_envs transitions. None:
    SB3's default transitions per update (PPO: 2048) shared among the envs,
    max(1, round(T / num_envs)) steps each (PPO with 8 envs: 256)."""
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
    seq_len: int | None = None
    """Recurrent networks: steps per training sequence (divides n_steps); none: the whole rollout."""
    network: NetworkConfig = field(default_factory=NetworkConfig)
    """Policy and value network architecture."""

    def validate(self) -> None:
        """Raise ConfigError naming the first value that cannot work."""
        if self.n_steps is not None:
            require_positive(self, "n_steps")
        require_positive(self, "learning_rate", "max_grad_norm", "clip_obs", "clip_reward")
        require_fraction(self, "gamma", "gae_lambda")
        require_non_negative(self, "ent_coef", "vf_coef")
        sizes = self.network.hidden_sizes
        require(len(sizes) > 0 and all(s > 0 for s in sizes), "hidden_sizes", "positive layer widths", sizes)
        require(self.network.recurrent_size > 0, "recurrent_size", "positive", self.network.recurrent_size)
        if self.n_steps is None:  # the divisor check waits for num_envs (check_seq_len)
            require(self.seq_len is None or self.seq_len > 0, "seq_len", "positive or none", self.seq_len)
        else:
            self.check_seq_len(self.n_steps)

    def steps_per_env(self, num_envs: int) -> int:
        """Steps each of `num_envs` envs takes per rollout: n_steps, or by default SB3's
        transitions per update shared among them."""
        if self.n_steps is not None:
            return self.n_steps
        return max(1, round(self.sb3_transitions / num_envs))

    def check_seq_len(self, n_steps: int) -> None:
        """Raise ConfigError unless seq_len is none or divides the rollout's `n_steps` steps per env."""
        if self.seq_len is not None:
            require(
                self.seq_len > 0 and n_steps % self.seq_len == 0,
                "seq_len",
                f"a positive divisor of n_steps ({n_steps} steps per env) or none",
                self.seq_len,
            )


class OnPolicyBase:
    """Acting, value estimates, normalisation, advantages and state shared by PPO and A2C."""

    def __init__(
        self,
        config: OnPolicyConfig,
        observation_space: gym.Space,
        action_space: gym.Space,
        num_envs: int,
        device: torch.device | str = "cpu",
        seed: int = 0,
        compile: bool = False,
    ):
        config.validate()
        self.config = config
        self.device = torch.device(device)
        self.compile = compile  # run the gradient step through torch.compile (agents.optim.compiled)
        # DDP training (set by the runner): average gradients and normaliser statistics over the
        # ranks of the initialised process group (see the module docstring)
        self.distributed = False
        self.n_steps = config.steps_per_env(num_envs)  # n_steps none: SB3's transitions per update, shared
        config.check_seq_len(self.n_steps)
        layout = envs.packing(observation_space)
        self.net = build_actor_critic(observation_space, action_space, config.network, layout).to(self.device)
        self.recurrent = isinstance(self.net, RecurrentActorCritic)
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

    def initial_state(self, num_envs: int) -> torch.Tensor | None:
        """The recurrent state [N, S, H] before any step (none for feed-forward networks)."""
        return self.net.initial_state(num_envs, self.device) if self.recurrent else None

    @torch.no_grad()
    def act(
        self,
        obs: torch.Tensor,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        state: torch.Tensor | None = None,
        starts: torch.Tensor | None = None,
    ) -> PolicyOutput:
        """Actions [N, ...], their log-probabilities [N] and values [N] for raw observations
        [N, ...]; recurrent networks also take the state and episode starts [N] and return
        the next state."""
        generator = self.generator if generator is None else generator
        if self.recurrent:
            return self.net.act(self.preprocess(obs), state, starts, deterministic, generator)
        return self.net.act(self.preprocess(obs), deterministic, generator)

    def frozen(self) -> AbstractContextManager[None]:
        """For one rollout: bfloat16 CNNs act on bfloat16 copies of their weights made on entry
        (`networks.cnn.frozen_weights`), not on weights cast at every step."""
        return frozen_weights(self.net)

    def predict(
        self, obs: torch.Tensor, deterministic: bool = True, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Actions [N, ...] for raw observations [N, ...] (evaluation of feed-forward policies;
        recurrent ones evaluate through `act`, which carries their state)."""
        return self.act(obs, deterministic, generator).action

    def deterministic_policy(self) -> nn.Module:
        """The policy of `predict(obs, deterministic=True)` as a module (agents/deploy.py); a
        recurrent one takes and returns the state."""
        cls = RecurrentActorCriticPolicy if self.recurrent else ActorCriticPolicy
        return cls(self.net, self.obs_normalizer)

    @torch.no_grad()
    def value(
        self, obs: torch.Tensor, state: torch.Tensor | None = None, starts: torch.Tensor | None = None
    ) -> torch.Tensor:
        """State values [N] of raw observations [N, ...] (recurrent: from `state`, after `starts` resets)."""
        if self.recurrent:
            return self.net.value(self.preprocess(obs), state, starts)
        return self.net.value(self.preprocess(obs))

    def chunk_length(self, n_steps: int) -> int:
        """Steps per training sequence: 1 (single transitions) for feed-forward networks."""
        if not self.recurrent:
            return 1
        return self.config.seq_len or n_steps

    @staticmethod
    def chunk(x: torch.Tensor, length: int) -> torch.Tensor:
        """[T, N, ...] -> [L, C, ...]: C = (T / L) * N sequences of L steps, chunk k of env n at k * N + n."""
        T, N = x.shape[:2]
        return x.reshape(T // length, length, N, *x.shape[2:]).transpose(0, 1).reshape(length, -1, *x.shape[2:])

    def evaluate_chunks(
        self, obs: torch.Tensor, actions: torch.Tensor, states: torch.Tensor | None, starts: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-probabilities, entropies and values [L*C] of chunks: preprocessed observations
        [L, C, ...], actions [L, C, ...], and for recurrent networks the states before each
        chunk [C, S, H] and the episode starts [L, C]."""
        if self.recurrent:
            return self.net.evaluate(obs, actions, states, starts)
        return self.net.evaluate(obs.flatten(0, 1), actions.flatten(0, 1))

    def advantages(self, batch: Rollout) -> tuple[torch.Tensor, torch.Tensor]:
        """GAE advantages and value targets [T, N], on scaled rewards when reward normalisation is on."""
        rewards = batch.rewards
        if self.reward_scaler is not None:
            rewards = self.reward_scaler(rewards, batch.terminated | batch.truncated, self.distributed)
        cfg = self.config
        return compute_gae(
            rewards, batch.values, batch.next_values, batch.terminated, batch.truncated, cfg.gamma, cfg.gae_lambda
        )

    def finish_update(self, batch: Rollout) -> None:
        """Fold the rollout's observations (all ranks' in DDP training) into the normaliser,
        after the update used the old statistics."""
        if self.obs_normalizer is not None:
            self.obs_normalizer.update(batch.obs.flatten(0, 1), self.distributed)

    def update(self, batch: Rollout, progress: Progress) -> Metrics:
        """Learn from one rollout; `progress.fraction` drives the schedules. Returns metrics as
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
            scaler = dict(state["reward_scaler"])
            if scaler["returns"].shape != self.reward_scaler.returns.shape:  # resumed with another number of envs
                scaler["returns"] = torch.zeros_like(self.reward_scaler.returns)  # their running returns restart
            self.reward_scaler.load_state_dict(scaler)
