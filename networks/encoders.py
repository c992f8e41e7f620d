"""Observation encoders: turn an observation batch into feature vectors."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from networks.init import HIDDEN_GAIN
from networks.precision import MixedPrecision

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU}


NARROW = 8
"""A layer with this few inputs or outputs (a critic's observation-and-action input, its one
Q-value out, an actor's action parameters) is bound by memory and call overhead, not FLOPs. As
a oneDNN matmul each took 30-50 us forward or backward on the 2-core CPU of the benchmarks,
0.6 ms of SAC's 3.3 ms compiled gradient step. Inside torch.compile such layers are written as
a broadcast product and a sum, which TorchInductor fuses into the neighbouring kernels: SAC's
compiled step took 0.77 of the time. Eager code keeps the matmul (as a product and a sum it is
up to 20x slower there)."""


def _narrow_and_compiled(weight: torch.Tensor) -> bool:
    # (compiling first: outside it, a trace for TorchScript export reads no shapes here)
    return torch.compiler.is_dynamo_compiling() and min(weight.shape[-2:]) <= NARROW


def narrow_matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x [..., B, in] @ weight [..., in, out] as a broadcast product and a sum over `in`, for
    a weight with at most NARROW inputs or outputs."""
    if weight.shape[-1] <= NARROW:  # [..., B, 1, in] * [..., 1, out, in]
        return (x.unsqueeze(-2) * weight.transpose(-1, -2).unsqueeze(-3)).sum(-1)
    return (x.unsqueeze(-1) * weight.unsqueeze(-3)).sum(-2)  # [..., B, in, 1] * [..., 1, in, out]


class Linear(nn.Linear):
    """`nn.Linear` (the same parameters and state dict); a narrow one (NARROW) computes as a
    broadcast product inside torch.compile."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _narrow_and_compiled(self.weight):
            return super().forward(x)
        y = narrow_matmul(x, self.weight.T)
        return y if self.bias is None else y + self.bias


class EnsembleLinear(nn.Module):
    """K independent linear layers applied in one batched matmul: [K, B, in] -> [K, B, out].

    For small networks the cost is per operation, not per FLOP, so evaluating the actor's
    and the critic's layers (or twin critics) as one `baddbmm` is faster than two Linears.
    """

    def __init__(self, members: int, in_dim: int, out_dim: int, ortho_gain: float | None = HIDDEN_GAIN):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(members, 1, out_dim))
        for k in range(members):
            if ortho_gain is None:  # torch's nn.Linear default
                bound = 1.0 / math.sqrt(in_dim)
                nn.init.uniform_(self.weight[k], -bound, bound)
                nn.init.uniform_(self.bias[k], -bound, bound)
            else:  # orthogonal in nn.Linear's [out, in] layout, as OpenAI baselines
                nn.init.orthogonal_(self.weight.data[k].T, ortho_gain)

    def forward(self, x: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
        """`dtype`: the matmul's arithmetic (its operands cast to it, as autocast casts them;
        the output then has it); none: the input's. A narrow layer under torch.compile computes
        in float32 whatever `dtype` says (NARROW)."""
        if _narrow_and_compiled(self.weight):
            return narrow_matmul(x, self.weight) + self.bias
        if dtype is None:
            return torch.baddbmm(self.bias, x, self.weight)
        return torch.baddbmm(self.bias.to(dtype), x.to(dtype), self.weight.to(dtype))


BFLOAT16_MIN_ROWS = 32
"""Batches of fewer rows compute in float32 whatever the precision: an env step's action (SAC's
exploration on one env) took 170 us through a bfloat16 trunk against 70 us in float32 (autocast
casts every weight at every call) on the AVX512-BF16 CPU the bfloat16 option was measured on."""


class MLPEncoder(MixedPrecision):
    """K MLPs of the same shape over the same flattened input: [B, *obs] -> [K, B, out_dim].
    An optional extractor turns observations into that input (one-hot, Dict keys). The layers
    compute in `precision` (`networks.precision`; the extractor in float32), batches of fewer
    than BFLOAT16_MIN_ROWS rows in float32.

    K=1 is one trunk; K=2 gives the actor and the critic a trunk each at the cost of one.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_sizes: Sequence[int],
        activation: str = "tanh",
        ortho_init: bool = True,
        members: int = 1,
        extractor: nn.Module | None = None,
        precision: str = "float32",
    ):
        super().__init__()
        self.members = members
        self.extractor = extractor  # observations -> flat features (one-hot, Dict keys); none: flatten
        layers: list[nn.Module] = []
        last = in_dim
        for size in hidden_sizes:
            layers += [
                EnsembleLinear(members, last, size, HIDDEN_GAIN if ortho_init else None),
                ACTIVATIONS[activation](),
            ]
            last = size
        self.net = nn.Sequential(*layers)
        self.out_dim = last
        self.set_precision(precision)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.flatten(start_dim=1).float() if self.extractor is None else self.extractor(obs)
        x = x.expand(self.members, *x.shape)
        self._resolve(x.device)
        # bfloat16 as autocast computes it (matmul operands cast, activations in bfloat16), with
        # the casts written out: a graph holding autocast misses torch.compile's AOTAutograd
        # cache (SAC's first compiled step took 4.3 s with autocast, 2.9 s without).
        bfloat16 = self.arithmetic == "bfloat16" and x.shape[-2] >= BFLOAT16_MIN_ROWS
        dtype = torch.bfloat16 if bfloat16 else None
        for layer in self.net:
            x = layer(x, dtype) if isinstance(layer, EnsembleLinear) else layer(x)
        return x.float()


class MemberStack(nn.Module):
    """K copies of an encoder [B, ...] -> [B, F] (e.g. a CNN each for the actor and the
    critic), stacked: [K, B, F]."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.out_dim = members[0].out_dim

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(obs) for member in self.members])
