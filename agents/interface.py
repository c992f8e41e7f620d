"""What a runner may ask of an agent: the two agent contracts, written down as Protocols.

Runners are typed against these and nothing else; `tests/test_conformance.py` runs every
registered algorithm through the real trainer to check that each keeps its contract. Both
families share acting for evaluation (`predict`), checkpoint state and one learning verb,
`update(batch, progress)`; they differ in what the batch is:

- on-policy agents learn from a `Rollout` [T, N, ...] that the runner collected with `act`
  and `value`, and return metrics;
- off-policy agents learn from a `Transitions` minibatch [B, ...] that the runner sampled
  from its replay buffer with the agent's generator, and return metrics and the batch's TD
  errors [B]; the runner writes those into the buffer's priorities when it samples by
  priority. An agent never holds a buffer or an env.

Metrics are floats or 0-d tensors left on the device: the trainer reads them on the host
only when it logs.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import nn

from agents.batch import Metrics, Progress, Rollout, Transitions
from networks.actor_critic import PolicyOutput

if TYPE_CHECKING:
    from agents.off_policy import OffPolicyConfig
    from agents.on_policy import OnPolicyConfig


@runtime_checkable
class Agent(Protocol):
    """What every agent provides."""

    device: torch.device
    generator: torch.Generator
    """The agent's own random stream (action sampling, minibatch order, replay sampling)."""

    def predict(
        self, obs: torch.Tensor, deterministic: bool = True, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Actions [N, ...] for raw observations [N, ...], as the env takes them (evaluation)."""
        ...

    def deterministic_policy(self) -> nn.Module:
        """`predict(obs, deterministic=True)` as a module sharing the agent's weights: raw
        observations [B, ...] -> actions [B, ...] (recurrent: (obs, state) -> (actions, state));
        `drl export` traces it (agents/deploy.py)."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs: weights, target networks, optimisers, normalisers, RNG."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class OnPolicyAgent(Agent, Protocol):
    """An agent that learns from the rollouts it collected itself (PPO, A2C)."""

    config: OnPolicyConfig
    n_steps: int
    """Steps each env takes per rollout."""
    recurrent: bool

    def initial_state(self, num_envs: int) -> torch.Tensor | None:
        """The recurrent state [N, S, H] before any step; none for feed-forward networks."""
        ...

    def act(
        self,
        obs: torch.Tensor,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
        state: torch.Tensor | None = None,
        starts: torch.Tensor | None = None,
    ) -> PolicyOutput:
        """Actions, log-probabilities and values [N] (and the next recurrent state)."""
        ...

    def value(
        self, obs: torch.Tensor, state: torch.Tensor | None = None, starts: torch.Tensor | None = None
    ) -> torch.Tensor:
        """State values [N] of raw observations [N, ...]."""
        ...

    def frozen(self) -> AbstractContextManager[None]:
        """A context around one rollout: the weights do not change within, so `act` and `value`
        may run on what the agent derives from them on entry (bfloat16 copies of CNN weights)."""
        ...

    def update(self, batch: Rollout, progress: Progress) -> Metrics:
        """Learn from one rollout."""
        ...


@runtime_checkable
class OffPolicyAgent(Agent, Protocol):
    """An agent that learns from minibatches of replayed transitions (DQN, SAC, TD3, DDPG)."""

    config: OffPolicyConfig
    """What the runner reads: buffer size, batch size, n-step, prioritised replay, the update-to-data ratio."""
    gradient_steps: int
    """Gradient steps taken so far (checkpointed)."""

    def random_action(self, n: int) -> torch.Tensor:
        """n actions drawn uniformly from the action space (the warm-up before learning starts)."""
        ...

    def explore(self, obs: torch.Tensor, progress: Progress) -> torch.Tensor:
        """Actions to collect data with, for raw observations [N, ...]."""
        ...

    def update(self, batch: Transitions, progress: Progress) -> tuple[Metrics, torch.Tensor]:
        """One gradient step on a sampled minibatch; returns metrics and the TD errors [B]."""
        ...
