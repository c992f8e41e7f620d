"""Optimiser helpers every agent shares: optimisers, target networks, and the compiled update.

`compiled(fn, enabled, device)` is what `--compile` does for every agent: the agent writes its
gradient step (losses, `backward`, `optimizer.step()`) as one plain autograd method, and that
method runs as it is or through `torch.compile`. TorchInductor then fuses the elementwise work
of the forward and backward passes and of the optimiser step into a few kernels, and Python
runs a handful of compiled graphs per step instead of one dispatch per tensor operation. On
CUDA it uses the CUDA-graph mode ("reduce-overhead"), which replays each graph with one launch.
The code a reader sees is the code that runs, compiled or not.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch
from torch import nn

F = TypeVar("F", bound=Callable[..., Any])


def optimizer_kwargs(device: torch.device, compile: bool = False) -> dict[str, bool]:
    """The optimiser implementation: torch's fused kernels where it has them (CPU and CUDA), or
    for a compiled step the foreach one, which TorchInductor fuses into the step's own kernels
    (torch.compile does not trace into the fused kernels)."""
    if compile or device.type not in ("cpu", "cuda"):
        return {"foreach": True}
    return {"fused": True}


def adam(
    params: Iterable[torch.Tensor], lr: float | torch.Tensor, device: torch.device, compile: bool = False, **kwargs: Any
) -> torch.optim.Adam:
    """Adam over `params` with the fastest implementation for `device` (and for a compiled step)."""
    return torch.optim.Adam(params, lr=lr, **optimizer_kwargs(device, compile), **kwargs)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate (in place where it is a tensor, so a compiled step
    that reads it is not recompiled for each new value)."""
    for group in optimizer.param_groups:
        if torch.is_tensor(group["lr"]):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def target_copy(net: nn.Module) -> nn.Module:
    """A frozen copy of `net` to serve as its target network."""
    target = copy.deepcopy(net)
    target.requires_grad_(False)
    return target


@torch.no_grad()
def polyak_update(target: list[torch.Tensor], online: list[torch.Tensor], tau: float) -> None:
    """target <- (1 - tau) target + tau online, one fused kernel per tensor list."""
    if tau >= 1.0:
        torch._foreach_copy_(target, online)
    else:
        torch._foreach_lerp_(target, online, tau)


def detached_call(module: nn.Module, *args: torch.Tensor) -> torch.Tensor:
    """`module(*args)` with its parameters treated as constants: gradients flow to the inputs
    (the actor's loss through the critic to the actions) but not into the module's weights."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    return torch.func.functional_call(module, params, args)


def compiled(fn: F, enabled: bool, device: torch.device) -> F:
    """`fn` through `torch.compile` when `enabled`, else `fn` itself.

    The first call compiles (seconds to tens of seconds on a CPU; TorchInductor caches the
    result on disk for later runs). Where compiling fails (no C++ compiler, an unsupported
    platform), the run warns once and continues with `fn` uncompiled.
    """
    if not enabled:
        return fn
    mode = "reduce-overhead" if device.type == "cuda" else None
    graph = torch.compile(fn, mode=mode)
    chosen: list[Callable[..., Any]] = []

    def call(*args: Any, **kwargs: Any) -> Any:
        if chosen:
            return chosen[0](*args, **kwargs)
        try:
            out = graph(*args, **kwargs)
        except Exception as exc:  # compiling failed: the first call runs uncompiled
            from envs import first_line

            warnings.warn(
                f"--compile: compiling {fn.__qualname__} failed ({type(exc).__name__}: {first_line(exc)}); "
                "continuing uncompiled",
                RuntimeWarning,
                stacklevel=2,
            )
            chosen.append(fn)
            return fn(*args, **kwargs)
        chosen.append(graph)
        return out

    return call  # type: ignore[return-value]
