"""Counter-based random numbers: each env's k-th draw depends only on (seed, env, k).

No generator state to carry or split: a batch of envs draws in one vectorised call, on any
device, with the same integers (hence the same floats) on CPU and CUDA. The mixer is
SplitMix64's finaliser (Steele, Lea and Flood 2014), on int64 tensors whose products wrap
modulo 2^64 as unsigned arithmetic would.
"""

from __future__ import annotations

import torch


def _signed(value: int) -> int:
    """A 64-bit unsigned constant as the int64 with the same bits."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_MUL1 = _signed(0xBF58476D1CE4E5B9)
_MUL2 = _signed(0x94D049BB133111EB)


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's >> is arithmetic on signed integers)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def splitmix64(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64 of int64 tensor `x`, elementwise (the generator's output for state x)."""
    x = x + _GOLDEN
    x = (x ^ _shift_right(x, 30)) * _MUL1
    x = (x ^ _shift_right(x, 27)) * _MUL2
    return x ^ _shift_right(x, 31)


def uniform(seed: int, env_ids: torch.Tensor, counters: torch.Tensor, draws: int) -> torch.Tensor:
    """Uniform float64 numbers in [0, 1): [N, draws] for envs `env_ids` [N] at `counters` [N]."""
    key = splitmix64(torch.full_like(env_ids, _signed(seed)))
    key = splitmix64(key ^ env_ids)
    key = splitmix64(key ^ counters)
    bits = splitmix64(key.unsqueeze(1) + torch.arange(draws, device=env_ids.device))
    return _shift_right(bits, 11).to(torch.float64) * 2.0**-53  # the top 53 bits, as numpy does
