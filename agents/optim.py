"""Optimiser helpers every agent shares: optimisers, target networks, and the compiled update.

An agent writes its gradient step as one plain autograd method: losses, then
`descend(optimizer, loss)` for each optimiser, which takes the gradients with
`torch.autograd.grad`, averages them over the ranks in DDP training (`average_gradients`),
clips them to a global norm if asked, and applies torch's own update (the functional form
`torch.optim.adam.adam` / `rmsprop.rmsprop` that `Optimizer.step` calls) to the optimiser's
own state, so checkpoints hold ordinary optimiser state dicts.

`compiled(fn, enabled, device)` is what `--compile` does for every agent: that method runs as
it is or through `torch.compile`. Written this way (no `.backward()`, no `Optimizer.step()`,
which Dynamo deliberately does not trace), the whole step (forward, backward and optimiser)
becomes one graph, and TorchInductor fuses its elementwise work into a few kernels: Python runs
once per step instead of once per tensor operation. (The LeanRL form, `loss.backward()` and
`optimizer.step()` inside the compiled function, breaks into six graphs and measured slower
than plain eager on a 2-core CPU.) On CUDA it uses the CUDA-graph mode ("reduce-overhead"),
which replays the graph with one launch. The code a reader sees is the code that runs,
compiled or not.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import torch
from torch import nn
from torch.optim import adam as _adam
from torch.optim import rmsprop as _rmsprop

from envs import first_line

F = TypeVar("F", bound=Callable[..., Any])


def optimizer_kwargs(device: torch.device, compile: bool = False) -> dict[str, bool]:
    """The optimiser implementation: torch's fused kernels where it has them (CPU and CUDA); for
    a compiled step the per-tensor one, which TorchInductor fuses into the step's own kernels
    (torch.compile does not trace into the fused kernels) and which takes a tensor learning
    rate (so a schedule does not recompile the step)."""
    if compile:
        return {"foreach": False}
    return {"fused": True} if device.type in ("cpu", "cuda") else {"foreach": True}


def adam(
    params: Iterable[torch.Tensor], lr: float | torch.Tensor, device: torch.device, compile: bool = False, **kwargs: Any
) -> torch.optim.Adam:
    """Adam over `params` with the fastest implementation for `device` (and for a compiled step),
    its state in place."""
    optimizer = torch.optim.Adam(params, lr=lr, **optimizer_kwargs(device, compile), **kwargs)
    materialize_state(optimizer)
    return optimizer


def materialize_state(optimizer: torch.optim.Optimizer) -> None:
    """Create the optimiser's per-parameter state now, as its first `step()` would (a step on
    zero gradients, which moves no parameter, with the step counts put back to 0), so that a
    compiled step finds it in place."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if all(optimizer.state.get(p) for p in params):
        return
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for p in params:
        p.grad = None
        optimizer.state[p]["step"].zero_()


@torch.no_grad()
def clip_by_global_norm(grads: list[torch.Tensor], max_norm: float) -> list[torch.Tensor]:
    """Scale `grads` so their global L2 norm is at most `max_norm` (torch's clip_grad_norm_)."""
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = (max_norm / (total + 1e-6)).clamp(max=1.0)
    return [g * scale for g in grads]


def process_group_ready() -> bool:
    """Whether this process belongs to a torch.distributed process group (DDP training)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized()


@torch.no_grad()
def all_ranks_sum(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` summed over the ranks of the process group (itself when there is none)."""
    if not process_group_ready():
        return tensor
    total = tensor.clone()
    torch.distributed.all_reduce(total)
    return total


@torch.no_grad()
def all_ranks_mean(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` averaged over the ranks of the process group (itself when there is none)."""
    if not process_group_ready():
        return tensor
    return all_ranks_sum(tensor) / torch.distributed.get_world_size()


@torch.no_grad()
def average_gradients(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """`grads` averaged over the ranks of the process group: one `all_reduce` of all of them
    flattened into one buffer, divided by the world size.

    This is what DistributedDataParallel's reducer does: it all-reduces flattened buckets of
    gradients and divides by the world size. DDP starts those all-reduces from autograd hooks
    that fire as `.backward()` accumulates into each parameter's `.grad`; our steps take their
    gradients with `torch.autograd.grad`, which writes no `.grad` and fires no such hook, so
    `descend` calls torch.distributed's collective itself, once per step over all gradients (one
    bucket). With every rank's loss a mean over an equal share of the batch, the average is the
    gradient of the loss over the whole batch."""
    flat = all_ranks_mean(torch.cat([g.reshape(-1) for g in grads]))
    return [part.view_as(g) for part, g in zip(flat.split([g.numel() for g in grads]), grads, strict=True)]


def descend(
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    max_grad_norm: float | None = None,
    distributed: bool = False,
) -> None:
    """One step of `optimizer` down `loss`: gradients by `torch.autograd.grad` (the parameters'
    `.grad` is not written), averaged over the ranks of the process group when `distributed`
    and one is initialised (`average_gradients`: what DistributedDataParallel's reducer does,
    called directly because its hooks do not fire under `autograd.grad`), clipped to a global
    norm of `max_grad_norm` when given (after averaging, as DDP with `clip_grad_norm_`: every
    rank clips the same gradient), then the optimiser's own update on its own state, the same on
    every rank. Adam and RMSprop with one parameter group."""
    (group,) = optimizer.param_groups
    params = group["params"]
    grads = list(torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True))
    if distributed and process_group_ready():
        grads = average_gradients(grads)
    if max_grad_norm is not None:
        grads = clip_by_global_norm(grads, max_grad_norm)
    states = [optimizer.state[p] for p in params]
    steps = [s["step"] for s in states]
    options = {k: group[k] for k in ("foreach", "maximize", "capturable", "differentiable")}
    with torch.no_grad():
        if isinstance(optimizer, torch.optim.Adam):
            beta1, beta2 = group["betas"]
            _adam.adam(
                params,
                grads,
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [s["max_exp_avg_sq"] for s in states] if group["amsgrad"] else [],
                steps,
                fused=group["fused"],
                decoupled_weight_decay=group.get("decoupled_weight_decay", False),
                amsgrad=group["amsgrad"],
                beta1=beta1,
                beta2=beta2,
                lr=group["lr"],
                weight_decay=group["weight_decay"],
                eps=group["eps"],
                **options,
            )
        elif isinstance(optimizer, torch.optim.RMSprop):
            _rmsprop.rmsprop(
                params,
                grads,
                [s["square_avg"] for s in states],
                [s["grad_avg"] for s in states] if group["centered"] else [],
                [s["momentum_buffer"] for s in states] if group["momentum"] > 0 else [],
                steps,
                lr=group["lr"],
                alpha=group["alpha"],
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                momentum=group["momentum"],
                centered=group["centered"],
                **options,
            )
        else:
            raise TypeError(f"descend supports Adam and RMSprop, not {type(optimizer).__name__}")


MIN_TENSOR_LR = 1e-30
"""The smallest learning rate `set_learning_rate` writes into a tensor (see there)."""


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate (in place where it is a tensor, so a compiled step
    that reads it is not recompiled for each new value).

    A tensor learning rate below MIN_TENSOR_LR (0 at the last update of a linear schedule) is
    written as MIN_TENSOR_LR. Under torch.compile, Adam with a tensor learning rate divides by
    it (times factors down to 0.01), and wrote NaN into every parameter element whose second
    moment was still 0, a weight whose gradient was always 0 (pytorch/pytorch#126514); a
    learning rate so small that the product is a denormal, flushed to 0 (`--flush-denormal`, on
    by default), does the same. At 1e-30 the step moves no parameter, as 0 would, and the
    optimiser's moments and step count advance the same."""
    for group in optimizer.param_groups:
        if torch.is_tensor(group["lr"]):
            group["lr"].fill_(max(lr, MIN_TENSOR_LR))
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


_GUARD_FILTERS = hasattr(torch.compiler, "keep_tensor_guards_unsafe")  # (torch.compile's guard_filter_fn, 2.7+)


def _without_dynamic_marking_guards(entries: list[Any]) -> list[bool]:
    """Keep every guard of a compiled step except those checking that no tensor was marked
    dynamic since (`torch._dynamo.mark_dynamic`, which agents never call): five per tensor,
    about 40% of a SAC step's guards, checked before every call (0.2 ms of a 3 ms step on a
    2-core CPU)."""
    return [entry.guard_type != "DIMENSION_DYNAMIC_MARKING_GUARD" for entry in entries]


def compiled(fn: F, enabled: bool, device: torch.device) -> F:
    """`fn` through `torch.compile` when `enabled`, else `fn` itself.

    The first call compiles (seconds to tens of seconds on a CPU; TorchInductor caches the
    result on disk for later runs). Where compiling fails (no C++ compiler, an unsupported
    platform), the run warns once and continues with `fn` uncompiled.
    """
    if not enabled:
        return fn
    mode = "reduce-overhead" if device.type == "cuda" else None
    options = {"guard_filter_fn": _without_dynamic_marking_guards} if _GUARD_FILTERS else None
    compiled_fn = torch.compile(fn, mode=mode, options=options)
    # Dynamo traces torch.autograd.grad only with this option; set around each call rather than
    # for the whole process (it matters while a call traces).
    tracing = {"trace_autograd_ops": True} if hasattr(torch._dynamo.config, "trace_autograd_ops") else {}

    def graph(*args: Any, **kwargs: Any) -> Any:
        with torch._dynamo.config.patch(**tracing):
            return compiled_fn(*args, **kwargs)

    chosen: list[Callable[..., Any]] = []

    def call(*args: Any, **kwargs: Any) -> Any:
        if chosen:
            return chosen[0](*args, **kwargs)
        try:
            out = graph(*args, **kwargs)
        except Exception as exc:  # compiling failed: the first call runs uncompiled
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
