"""The contract between an env backend and the runners: `VectorEnvBackend` and `StepInfo`.

Every backend (`envs.backend_names()`: Gymnasium sync and async, the torch-native envs,
EnvPool, and any a user registers with `envs.register_backend`) is a batch of N envs that
speaks torch tensors on one device, with Gymnasium's vector-env API and same-step autoreset.
Shapes below: N = num_envs, *obs = storage_shape(single_observation_space).
"""

from __future__ import annotations

from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch


class StepInfo(NamedTuple):
    """What a step tells the runner besides obs, reward, terminated and truncated.

    All tensors are on the backend's `device` with leading dimension N. On steps where no
    episode ended a backend may return the same zero tensors every time: read them, do not
    write into them.
    """

    final_obs: torch.Tensor
    """[N, *obs], dtype obs_dtype: the observation each env reached this step: the true final
    one where an episode ended (before the autoreset; bootstrap truncations from it), else the
    same as the returned obs."""
    episode_return: torch.Tensor
    """[N] float32: the raw (unclipped, unnormalised) return of each episode that ended this
    step, else 0."""
    episode_length: torch.Tensor
    """[N] int64: the length in env steps of each episode that ended this step, else 0."""
    episodes_ended: bool | None
    """A host bool: whether any episode ended this step (any nonzero episode_length), so a
    runner can skip folding in zeros without a device read; None where the backend cannot
    tell without reading the device (the native backend on a GPU): then fold in every step."""


@runtime_checkable
class VectorEnvBackend(Protocol):
    """N environments stepped as one, with tensor inputs and outputs on `device`.

    Guarantees of every backend:
    - `terminated` and `truncated` stay apart: a time limit sets truncated (a truncated step
      is bootstrapped from `StepInfo.final_obs`), a terminal state sets terminated.
    - Same-step autoreset: where an episode ends, the obs returned by that step is already the
      first one of the next episode, and the step's `StepInfo.final_obs` is the last of the
      finished one; every step is a real transition.
    - Actions arrive as one tensor [N, *action] on `device`; Discrete (and MultiDiscrete)
      actions are in 0..n-1 whatever the space's `start`; Box actions may leave the bounds
      and are clipped into them by the backend.
    """

    num_envs: int
    """N, the number of envs."""
    device: torch.device
    """Where every returned tensor lives and where actions arrive."""
    single_observation_space: Any
    """The Gymnasium space of one env's observations."""
    single_action_space: Any
    """The Gymnasium space of one env's actions."""
    obs_dtype: torch.dtype
    """The dtype of observations (and final_obs), e.g. torch.float32 or torch.uint8."""

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[torch.Tensor, dict]:
        """Start new episodes in every env; returns (obs [N, *obs], info). With `seed`, env i
        starts from seed + i (or an equally deterministic derivation); without, the seed given
        to `make` applies on the first reset."""
        ...

    def step(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, StepInfo]:
        """Step every env once: (obs [N, *obs], reward [N] float32, terminated [N] bool,
        truncated [N] bool, StepInfo), all on `device`."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the current episodes exactly after `load_state_dict`:
        a snapshot that later steps do not change, made of tensors, numbers, strings, bytes,
        lists and dicts only (checkpoints load with `torch.load(weights_only=True)`). May raise
        TypeError (or pickle.PicklingError) for envs that cannot be saved."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (from an instance with the same num_envs)."""
        ...

    def close(self) -> None:
        """Release processes, threads and renderers; the backend is not used afterwards."""
        ...

    def render(self) -> Any:
        """An RGB frame (numpy uint8 [H, W, 3]) where the backend renders, else None or an error."""
        ...
