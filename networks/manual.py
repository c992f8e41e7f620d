"""MLP forward and backward passes written out by hand, for small networks on the CPU.

A gradient step of SAC on 256x256 MLPs is about a hundred small tensor operations. On the
CPU, autograd's bookkeeping for each (graph nodes, saved tensors, gradient accumulation,
`requires_grad` toggling) costs as much as the arithmetic. `ManualMLP` runs the same layers
as plain tensor calls: `forward` keeps what the backward pass needs (a `Tape`), `backward`
writes weight gradients straight into the parameters' `.grad` tensors (for a fused
optimiser) and returns the input gradient when asked.

It works on the parameters of existing modules (`EnsembleLinear` [K, in, out] and
`nn.Linear` [out, in]), so checkpoints, evaluation and everything else keep using the modules.

Mixed precision (`compute_dtype=torch.bfloat16`): layers at least `MIXED_MIN_WIDTH` wide on
both sides (the hidden-to-hidden ones, nearly all the FLOPs) multiply in bfloat16, summing in
float32; their gradients land in the float32 `.grad`, so the optimiser state and master weights
stay float32. Two ways, by what the CPU offers:
- bf16 matmul mode (`runners.precision.bf16_matmul_mode`, CPUs with AMX): the layers keep
  float32 tensors and run with oneDNN's float32 matmul precision set to "bf16" around them;
  the kernels round operands as they load them, and nothing else is cast.
- elsewhere, cast copies: bfloat16 copies of the weights, cast once per optimiser step by
  `refresh()`, and bfloat16 activations into those layers.
Narrow layers (the input and output ones) stay float32: bfloat16 is no faster there (CPU
kernels for thin matrices are memory-bound, and slower in bfloat16) and the outputs the
losses see keep float32's resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from networks.encoders import EnsembleLinear
from runners.precision import bf16_matmul_mode

# each activation in place, and its backward from the output y, also in place (in the gradient,
# a fresh tensor the backward pass owns): dL/dx = dL/dy * f'(x)
_ACTIVATIONS = {
    "relu": (torch.relu_, lambda grad, y: torch.ops.aten.threshold_backward.grad_input(grad, y, 0, grad_input=grad)),
    "tanh": (torch.tanh_, lambda grad, y: torch.ops.aten.tanh_backward.grad_input(grad, y, grad_input=grad)),
}


def supports_activation(name: str) -> bool:
    return name in _ACTIVATIONS


@dataclass
class Tape:
    """What `ManualMLP.forward` keeps for the backward pass: each layer's input (after the
    previous activation), in compute dtype, [K, B, in]."""

    inputs: list[torch.Tensor]

    def rows(self, stop: int) -> Tape:
        """The tape of the first `stop` rows of the batch (a forward over a concatenation)."""
        return Tape([x[:, :stop] for x in self.inputs])


MIXED_MIN_WIDTH = 64
"""Layers narrower than this on either side run in float32 under mixed precision."""


class _LayerPrecision:
    """Within `with`: `layer(i)` sets oneDNN's float32 matmul precision to "bf16" for the
    layers in bf16 matmul mode and back to the caller's setting for the others; the caller's
    setting is restored on exit, exceptions included."""

    def __init__(self, bf16_mode: list[bool]):
        self.bf16_mode = bf16_mode
        self.backend = torch.backends.mkldnn.matmul if any(bf16_mode) else None
        self.previous = "none"

    def __enter__(self) -> _LayerPrecision:
        if self.backend is not None:
            self.previous = self.backend.fp32_precision
        return self

    def layer(self, i: int) -> None:
        if self.backend is not None:
            self.backend.fp32_precision = "bf16" if self.bf16_mode[i] else self.previous

    def __exit__(self, *exc: object) -> None:
        if self.backend is not None:
            self.backend.fp32_precision = self.previous


class ManualMLP:
    """Linear layers with an activation between them (none after the last), over K members.

    Layers are `EnsembleLinear` (weight [K, in, out]) or `nn.Linear` (weight [out, in], K=1).
    Input [B, in] (shared by all members) or [K, B, in]; output [K, B, out], float32.
    """

    def __init__(
        self,
        layers: list[nn.Module],
        activation: str,
        compute_dtype: torch.dtype = torch.float32,
        bf16_mode: bool | None = None,
    ):
        """`bf16_mode`: multiply bfloat16 layers in oneDNN's bf16 matmul mode rather than on cast
        copies; by default where that mode is plain bfloat16 (`bf16_matmul_mode()`)."""
        if not supports_activation(activation):
            raise ValueError(f"ManualMLP has no backward for activation {activation!r}")
        self.layers = layers
        self.act, self.act_backward = _ACTIVATIONS[activation]
        self.members = layers[0].weight.shape[0] if isinstance(layers[0], EnsembleLinear) else 1
        self.params = [p for layer in layers for p in (layer.weight, layer.bias)]
        # each layer's weight [K, in, out] and bias [K, 1, out]: views of the parameters
        self.masters = [self._matmul_layout(layer) for layer in layers]
        # what each layer multiplies in, and the dtype of its operands (float32 in bf16 matmul mode)
        self.math = [compute_dtype if min(w.shape[-2:]) >= MIXED_MIN_WIDTH else w.dtype for w, _ in self.masters]
        use_mode = bf16_matmul_mode() if bf16_mode is None else bf16_mode
        in_mode = [use_mode and m == torch.bfloat16 for m in self.math]
        self.dtypes = [torch.float32 if mode else m for m, mode in zip(self.math, in_mode, strict=True)]
        self.precision = _LayerPrecision(in_mode)
        # what the matmuls use: the views (float32 operands) or compute-dtype copies (see refresh)
        self.compute = [
            (w.to(dtype, memory_format=torch.contiguous_format), b.to(dtype)) if dtype != w.dtype else (w, b)
            for (w, b), dtype in zip(self.masters, self.dtypes, strict=True)
        ]
        self._copied = [i for i, (w, _) in enumerate(self.masters) if self.dtypes[i] != w.dtype]
        self._grads: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def _matmul_layout(self, layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        w, b = layer.weight.detach(), layer.bias.detach()
        if not isinstance(layer, EnsembleLinear):
            w = w.mT.unsqueeze(0)
        return w, b.view(self.members, 1, -1)

    def describe(self) -> str:
        """The widest layer's precision: "float32", "bfloat16 (cast copies)" or "bfloat16 (matmul mode)"."""
        i = max(range(len(self.masters)), key=lambda j: min(self.masters[j][0].shape[-2:]))
        name = str(self.math[i]).removeprefix("torch.")
        if self.dtypes[i] != self.math[i]:
            return f"{name} (matmul mode)"
        return f"{name} (cast copies)" if i in self._copied else name

    def refresh(self) -> None:
        """Re-cast the compute-dtype copies after the parameters changed (mixed precision)."""
        if self._copied:
            torch._foreach_copy_(
                [t for i in self._copied for t in self.compute[i]], [t for i in self._copied for t in self.masters[i]]
            )

    def grads(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's (weight, bias) `.grad` in the layout `backward` computes them: [K, in, out]
        for EnsembleLinear, [1, out, in] for nn.Linear, [K, 1, out] biases. Allocated where a
        parameter has none (or its `.grad` was replaced), overwritten by `backward`."""
        if self._grads is None or any(p.grad is not g for p, g in zip(self.params, self._owned, strict=True)):
            for p in self.params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            self._owned = [p.grad for p in self.params]
            self._grads = []
            for layer in self.layers:
                w, b = layer.weight.grad, layer.bias.grad
                self._grads.append((w.view(self.members, *w.shape[-2:]), b.view(self.members, 1, -1)))
        return self._grads

    # ------------------------------------------------------------ passes
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Tape]:
        """Output [K, B, out] (float32), and the tape for `backward`."""
        if x.dim() == 2:
            x = x.expand(self.members, *x.shape)
        inputs = []
        last = len(self.layers) - 1
        x = x.to(self.dtypes[0])
        with self.precision as precision:
            for i, (w, b) in enumerate(self.compute):
                inputs.append(x)
                precision.layer(i)
                x = torch.baddbmm(b, x, w)
                if i < last:
                    # elementwise ops are cheaper in float32 on the CPU: activate after widening to
                    # float32, before narrowing to bfloat16 (relu commutes with rounding)
                    wider = self.dtypes[i + 1] == torch.float32
                    x = self.act(x.to(self.dtypes[i + 1])) if wider else self.act(x).to(self.dtypes[i + 1])
        return x.float(), Tape(inputs)

    def backward(
        self, tape: Tape, grad_out: torch.Tensor, params: bool = True, input_columns: slice | None = None
    ) -> torch.Tensor | None:
        """Backpropagate dL/d(output) [K, B, out].

        With `params`, the weight and bias gradients overwrite the parameters' `.grad`.
        With `input_columns`, returns dL/d(input)[..., input_columns] [K, B, cols] (float32
        unless the first layer is mixed); otherwise None, and the first layer's input gradient
        is not computed.
        """
        grads = self.grads() if params else []
        cast_to: list[torch.Tensor] = []  # cast-copy layers' gradients, cast into .grad at the end
        cast_from: list[torch.Tensor] = []
        grad = grad_out
        with self.precision as precision:
            for i in range(len(self.layers) - 1, -1, -1):
                x, (w, _), dtype = tape.inputs[i], self.compute[i], self.dtypes[i]
                grad = grad.to(dtype)
                precision.layer(i)
                if params:
                    gw, gb = grads[i]
                    if dtype == gw.dtype:
                        self._weight_grad(i, x, grad, out=gw)
                        torch.sum(grad, dim=1, keepdim=True, out=gb)
                    else:
                        cast_to += [gw, gb]
                        cast_from += [self._weight_grad(i, x, grad), grad.sum(dim=1, keepdim=True)]
                if i > 0:
                    grad = self.act_backward(torch.bmm(grad, w.mT), x)
                elif input_columns is not None:
                    grad = torch.bmm(grad, w[:, input_columns].mT)
        if cast_to:
            torch._foreach_copy_(cast_to, cast_from)
        return grad if input_columns is not None else None

    def _weight_grad(
        self, i: int, x: torch.Tensor, grad: torch.Tensor, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Layer i's weight gradient in the layout of `grads()`, from its input x [K, B, in] and
        output gradient [K, B, out]. The thin operand goes first, transposed: x^T grad as
        (grad^T x)^T where out < in (4x faster for a 256 -> 1 layer than the other order)."""
        ensemble = isinstance(self.layers[i], EnsembleLinear)
        if ensemble and grad.shape[-1] < x.shape[-1]:  # [K, in, out] from grad^T x [K, out, in]
            if out is None:
                return torch.bmm(grad.mT, x).mT
            return torch.bmm(grad.mT, x, out=out.mT).mT
        a, b = (x.mT, grad) if ensemble else (grad.mT, x)  # nn.Linear's weight is [out, in]
        return torch.bmm(a, b) if out is None else torch.bmm(a, b, out=out)
