"""Non-finite values (NaN, infinity) in a run's observations, rewards, losses or parameters.

Checks are cheap. On a GPU they stay on the device: each `watch` folds "is anything
non-finite here" into a flag without reading it back, and `first_bad` reads all flags in one
transfer. On the CPU, where reading a value costs nothing, a flag is a Python bool found at
once (a few microseconds, where three tensor operations took tens).

The trainer reads the flags after every update, except for off-policy runs on a GPU, whose
iterations are single env steps: there it reads them at each log and checkpoint. It watches
the losses at every update and the parameters where the flags are read, but in off-policy
runs (an update per env step) only at logs and checkpoints: a non-finite parameter makes the
next update's losses non-finite. A checkpoint is always written after a check of the
parameters, so that it never holds a diverged run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


class Diverged(Exception):
    """A non-finite value was found; the message names what and the step."""


class FiniteCheck:
    """Flags, by name, of values seen non-finite since the last `first_bad`."""

    def __init__(self) -> None:
        self.flags: dict[str, torch.Tensor | bool] = {}

    def watch(self, name: str, tensor: torch.Tensor | None) -> None:
        if tensor is None or not (tensor.is_floating_point() or tensor.is_complex()):
            return  # integer observations (images) cannot be NaN
        tensor = tensor.detach()
        if tensor.device.type != "cpu":
            self._fold(name, ~torch.isfinite(tensor).all())
        elif tensor.dtype in _NUMPY_FLOATS:
            self._fold(name, not np.isfinite(tensor.numpy()).all())
        else:
            self._fold(name, not torch.isfinite(tensor).all().item())

    def watch_sum(self, name: str, tensors: list[torch.Tensor]) -> None:
        """Whether any of many tensors is non-finite, from their sums (a NaN or infinity in a
        tensor makes its sum non-finite; an overflow of a finite sum is reported too)."""
        if not tensors:
            return
        if any(t.device.type != "cpu" for t in tensors):
            self.watch(name, torch.stack([t.detach().float().sum() for t in tensors]))
        else:  # (a Python sum, in double precision, of each tensor's sum)
            total = sum(float(t.detach()) if t.dim() == 0 else float(t.detach().float().sum()) for t in tensors)
            self._fold(name, not np.isfinite(total))

    def _fold(self, name: str, bad: torch.Tensor | bool) -> None:
        previous = self.flags.get(name)
        self.flags[name] = bad if previous is None else previous | bad

    def first_bad(self) -> str | None:
        """The first name flagged (in the order watched), or None; clears the flags."""
        if not self.flags:
            return None
        names, flags = list(self.flags), list(self.flags.values())
        on_device = [i for i, flag in enumerate(flags) if torch.is_tensor(flag)]
        if on_device:  # one transfer for all of them
            for i, bad in zip(on_device, torch.stack([flags[i] for i in on_device]).tolist(), strict=True):
                flags[i] = bad
        self.flags = {}
        return next((name for name, bad in zip(names, flags, strict=True) if bad), None)


class UpdateSnapshot:
    """The agent's tensors before an update (weights, target networks, optimiser state,
    normaliser statistics: every tensor of its state_dict), to put back in place when the
    update went non-finite (`--on-nan skip`). Counters kept as Python numbers run on."""

    def __init__(self, agent: Any):
        self.agent = agent
        self.tensors: list[torch.Tensor] = []
        self.copies: list[torch.Tensor] = []

    def take(self) -> None:
        # (taken afresh each time: optimisers create their state at their first step)
        self.tensors = [t for t in _tensors(self.agent.state_dict()) if t.is_floating_point() or t.dtype == torch.int64]
        self.copies = [t.detach().clone() for t in self.tensors]

    @torch.no_grad()
    def restore(self) -> None:
        for tensor, copy in zip(self.tensors, self.copies, strict=True):
            tensor.copy_(copy)


def _tensors(state: Any) -> list[torch.Tensor]:
    """The tensors of a nested state dict, in order (module state_dicts and optimiser states
    hold the live tensors, so writing into these writes into the agent)."""
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for value in state.values() for t in _tensors(value)]
    if isinstance(state, (list, tuple)):
        return [t for value in state for t in _tensors(value)]
    return []


def agent_parameters(agent: Any) -> list[torch.Tensor]:
    """The trainable tensors of an agent: those of its modules, and its own learnable tensors
    (SAC's log alpha); found among its attributes."""
    found: dict[int, torch.Tensor] = {}
    for value in vars(agent).values():
        if isinstance(value, nn.Module):
            found.update((id(p), p) for p in value.parameters())
        elif isinstance(value, torch.Tensor) and value.requires_grad:
            found[id(value)] = value
    return list(found.values())
