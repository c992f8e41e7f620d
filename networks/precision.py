"""Mixed precision of encoders: float32, or bfloat16 as autocast computes it (weights, gradients
and optimiser state stay float32; the features come out float32; CNNs run under autocast, MLP
trunks write its casts out), or auto: bfloat16 where the device computes in it in hardware
(`native_bfloat16`), float32 elsewhere.

`MixedPrecision` is the base of the encoders that offer it: the CNNs (`--cnn-precision`) and
the MLP trunks (`--mlp-precision`). Exported policies compute in float32 (`set_precision`):
bfloat16 autocast has no ONNX form.
"""

from __future__ import annotations

import torch
from torch import nn

PRECISIONS = ("auto", "float32", "bfloat16")


def native_bfloat16(device: torch.device) -> bool:
    """Whether `device` computes in bfloat16 in hardware: CUDA GPUs that say so (Ampere and
    later), CPUs with AVX512-BF16 or AMX. Elsewhere bfloat16 is emulated, and slower than float32."""
    if device.type == "cuda":
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch before 2.4
            return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
    return False


def arithmetic_for(precision: str, device: torch.device) -> str:
    """What `precision` computes in on `device`: float32 or bfloat16 (auto: bfloat16 where native)."""
    if precision == "auto":
        return "bfloat16" if native_bfloat16(device) else "float32"
    return precision


class MixedPrecision(nn.Module):
    """An encoder computing in `precision` (see the module docstring). `arithmetic` is what it
    computes in: set at once for float32 and bfloat16; auto decides when the module is moved
    (`.to(device)`, as every agent does with its networks) or else at the first forward, on
    that device. Deciding before a forward keeps the decision out of compiled graphs."""

    precision: str
    arithmetic: str | None

    def set_precision(self, precision: str) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.precision = precision
        self.arithmetic = None
        if precision != "auto":
            self._use(precision)

    def _use(self, arithmetic: str) -> None:
        self.arithmetic = arithmetic

    def _resolve(self, device: torch.device) -> None:
        if self.arithmetic is None:
            self._use(arithmetic_for(self.precision, device))

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 (nn.Module's signature)
        module = super()._apply(fn, recurse)
        weight = next(self.parameters(), None)
        if getattr(self, "precision", None) == "auto" and weight is not None:  # (re)decide for the device moved to
            self.arithmetic = None
            self._resolve(weight.device)
        return module
