"""What DQN, SAC and TD3/DDPG share: config fields, action scaling, target networks and state.

An off-policy agent owns its networks, target networks, optimisers and the random
generator it explores with (the runner samples minibatches with it too). The runner fills
its replay buffer with `random_action` during warm-up and `explore` after it, samples a
`Transitions` minibatch for each gradient step the update-to-data ratio asks for, and calls
`update(batch, progress)`, which returns metrics and the batch's TD errors (the runner
writes them into the buffer's priorities when it samples by priority); see
`agents.interface.OffPolicyAgent`.
Continuous agents act in [-1, 1]^A internally and rescale to the env's bounds at the
boundary (`to_env`, `from_env`); the buffer stores the env's actions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import torch
from torch import nn

from agents.batch import Metrics, Progress, Transitions
from agents.config import require, require_fraction, require_non_negative, require_positive
from networks import NetworkConfig


def off_policy_network() -> NetworkConfig:
    """Stable-Baselines3's off-policy default: two ReLU layers of 256, torch's default init."""
    return NetworkConfig(hidden_sizes=(256, 256), activation="relu", ortho_init=False)


@dataclass
class OffPolicyConfig:
    """Hyperparameters every off-policy agent has; defaults are Stable-Baselines3's SAC's."""

    learning_rate: float = 3e-4
    """Optimiser step size."""
    buffer_size: int = 1_000_000
    """Replay capacity in transitions (summed over envs, rounded up to whole steps of all envs);
    the oldest are overwritten."""
    learning_starts: int = 100
    """Env steps (summed over envs) of uniformly random actions before learning starts."""
    batch_size: int = 256
    """Transitions per gradient step."""
    gamma: float = 0.99
    """Discount factor."""
    tau: float = 0.005
    """Polyak coefficient of the target networks' updates (1: copy)."""
    train_every: int = 1
    """Env steps (summed over envs, rounded up to whole steps of all envs) between training phases."""
    utd_ratio: float = 1.0
    """Update-to-data ratio: gradient steps per env step collected, run at each training phase."""
    n_step: int = 1
    """Bootstrap from n-step returns (windows cut at episode ends)."""
    prioritized: bool = False
    """Prioritised experience replay (Schaul et al. 2016: proportional, sum-tree): sample by
    TD error, weight the loss by importance weights."""
    per_alpha: float = 0.6
    """How much prioritisation is used (0: uniform)."""
    per_beta: float = 0.4
    """Importance-sampling exponent at the start, annealed linearly to 1 over training."""
    per_eps: float = 1e-6
    """Added to |TD error| so that no transition gets priority 0."""
    share_frames: bool | None = None
    """Store each frame of frame-stacked observations once in the replay buffer and rebuild the
    stacks when sampling (about 1/7 of the memory for Atari's 4 x 84 x 84); none: on for Atari
    games, whose observations stack frames."""
    network: NetworkConfig = field(default_factory=off_policy_network)
    """Network architecture."""

    def validate(self) -> None:
        require_positive(self, "learning_rate", "buffer_size", "batch_size", "train_every", "utd_ratio", "n_step")
        require_non_negative(self, "learning_starts")
        require_fraction(self, "gamma")
        require(0.0 < self.tau <= 1.0, "tau", "in (0, 1]", self.tau)
        require(self.n_step <= 1000, "n_step", "at most 1000", self.n_step)
        require_positive(self, "per_eps")
        require_fraction(self, "per_alpha", "per_beta")
        sizes = self.network.hidden_sizes
        require(len(sizes) > 0 and all(s > 0 for s in sizes), "hidden_sizes", "positive layer widths", sizes)


class OffPolicyBase:
    """Spaces, action scaling, random actions and checkpoint state shared by DQN, SAC and TD3."""

    def __init__(
        self,
        config: OffPolicyConfig,
        observation_space: gym.Space,
        action_space: gym.Space,
        num_envs: int,
        device: torch.device | str = "cpu",
        seed: int = 0,
        compile: bool = False,
    ):
        config.validate()
        self.compile = compile  # run the gradient step through torch.compile (agents.optim.compiled)
        self.config = config
        self.device = torch.device(device)
        self.observation_space, self.action_space = observation_space, action_space
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.gradient_steps = 0
        if isinstance(action_space, gym.spaces.Box):
            self.low = torch.as_tensor(action_space.low, dtype=torch.float32, device=self.device)
            self.high = torch.as_tensor(action_space.high, dtype=torch.float32, device=self.device)
            # to_env(a) = center + half_range * a, from_env(x) = (x - center) / half_range, one op each
            self._half_range = 0.5 * (self.high - self.low)
            self._center = self.low + self._half_range
            self._inv_half_range = 1.0 / self._half_range
            self._from_env_offset = -self._center * self._inv_half_range

    # ------------------------------------------------------------ acting
    def random_action(self, n: int) -> torch.Tensor:
        """n actions drawn uniformly from the action space (warm-up)."""
        space = self.action_space
        if isinstance(space, gym.spaces.Discrete):  # as every agent, in 0..n-1: the env adds space.start
            return torch.randint(0, int(space.n), (n,), generator=self.generator, device=self.device)
        u = torch.rand((n, *space.shape), generator=self.generator, device=self.device)
        return self.low + u * (self.high - self.low)

    def to_env(self, action: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> the env's [low, high]."""
        return torch.addcmul(self._center, action, self._half_range)

    def from_env(self, action: torch.Tensor) -> torch.Tensor:
        """The env's [low, high] -> [-1, 1]."""
        return torch.addcmul(self._from_env_offset, action, self._inv_half_range)

    def explore(self, obs: torch.Tensor, progress: Progress) -> torch.Tensor:
        """Actions to collect data with, for raw observations [N, ...]."""
        raise NotImplementedError

    def predict(
        self, obs: torch.Tensor, deterministic: bool = True, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Actions for raw observations [N, ...] (evaluation)."""
        raise NotImplementedError

    def deterministic_policy(self) -> nn.Module:
        """The policy of `predict(obs, deterministic=True)` as a module (agents/deploy.py)."""
        raise NotImplementedError

    # ------------------------------------------------------------ learning
    def update(self, batch: Transitions, progress: Progress) -> tuple[Metrics, torch.Tensor]:
        """One gradient step on a sampled minibatch: metrics (floats or 0-d device tensors) and
        the TD errors [B] of the batch."""
        raise NotImplementedError

    def modules(self) -> dict[str, nn.Module]:
        """Networks (and target networks) by name, for checkpoints."""
        raise NotImplementedError

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {name: m.state_dict() for name, m in self.modules().items()}
        state.update({name: opt.state_dict() for name, opt in self.optimizers().items()})
        state.update(
            generator=self.generator.get_state(),
            generator_device=self.device.type,
            gradient_steps=self.gradient_steps,
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, m in self.modules().items():
            m.load_state_dict(state[name])
        for name, opt in self.optimizers().items():
            opt.load_state_dict(state[name])
        if state.get("generator_device") == self.device.type:
            self.generator.set_state(state["generator"])
        self.gradient_steps = int(state["gradient_steps"])
