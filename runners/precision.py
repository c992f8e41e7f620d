"""Process-wide CPU settings that `drl train` may make for its own process, never the library:
oneDNN's fast float32 matmuls where they are as exact as float32, flushing denormals to zero,
and torch's thread count (`set_process_options`, called by the CLI and the benchmarks), and the
garbage collector's view of what was built before training (`freeze_startup_objects`).

On CPUs with AVX512-BF16 (e.g. AMD Zen 4/5), `torch.backends.mkldnn.matmul.fp32_precision
= "bf16"` routes float32 matmuls through oneDNN, about twice as fast as the default MKL
path there, with errors at float32's level (it splits operands into several bf16 parts).
On a CPU where the same setting means plain bf16 arithmetic (three significant digits),
the check below fails and the default stays.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from runners.config import TrainConfig

_TOLERANCE = 1e-5


def _backend() -> object | None:
    matmul = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
    return matmul if matmul is not None and hasattr(matmul, "fp32_precision") else None


def cpu_matmul_precision() -> str | None:
    """The current setting (None where this torch has no such setting)."""
    backend = _backend()
    return None if backend is None else backend.fp32_precision


def restore_cpu_matmul_precision(previous: str | None) -> None:
    backend = _backend()
    if backend is not None and previous is not None:
        backend.fp32_precision = previous


def _products_in_bf16_mode() -> list[float] | None:
    """Sums of 256 products 1.001 * 1.0 with `fp32_precision = "bf16"` (mm, bmm, and bmm with
    either operand transposed): 256.256 where the mode is as exact as float32, 256.0 where it
    is plain bfloat16 arithmetic (1.001 rounds to 1.0). None where torch has no such setting.
    The setting is left as it was."""
    backend = _backend()
    if backend is None:
        return None
    previous = backend.fp32_precision
    try:
        backend.fp32_precision = "bf16"
        a, b = torch.full((1, 256, 256), 1.001), torch.ones(1, 256, 256)
        products = ((a[0] @ b[0])[0, 0], torch.bmm(a, b), torch.bmm(a, b.mT), torch.bmm(a.mT, b))
        return [float(x.flatten()[0]) for x in products]
    except (RuntimeError, ValueError):
        return None
    finally:
        backend.fp32_precision = previous


def enable_fast_cpu_matmul() -> bool:
    """Switch to the fast path if it is float32-accurate here; returns whether it is on.
    The setting is process-wide: `restore_cpu_matmul_precision` puts the old one back."""
    products = _products_in_bf16_mode()
    exact = 256 * 1.001
    ok = products is not None and all(abs(x - exact) / exact < _TOLERANCE for x in products)
    if ok:
        _backend().fp32_precision = "bf16"
    return ok


def flush_denormals() -> bool:
    """Flush denormal floats to zero in this thread and in torch's worker threads started after
    this call (their floating-point mode is copied when they start); returns whether the CPU
    supports it. Denormal operands make x86 arithmetic 10-30x slower: Adam's moments of
    weights whose gradient stays zero decay through that range."""
    return torch.set_flush_denormal(True)


def denormals_flushed() -> float:
    """The fraction of a large denormal tensor that a parallel multiply flushes to zero: 1.0 when
    every torch thread flushes, about 1/threads when only the calling one does, 0.0 when none."""
    x = torch.full((1 << 20,), 1e-39)
    return float((x * 1.0 == 0).float().mean())


def set_process_options(cfg: TrainConfig) -> dict[str, object]:
    """Apply a run's process-wide options to this process (`drl train` does, for its own
    process, before it builds anything): torch threads, denormal flushing, fast matmuls.
    Returns what took effect, for reports."""
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    cpu = cfg.torch_device().type == "cpu"
    flushed = cpu and cfg.flush_denormal and flush_denormals()
    fast = cpu and cfg.fast_matmul and enable_fast_cpu_matmul()
    return {"torch_threads": torch.get_num_threads(), "flush_denormal": bool(flushed), "fast_matmul": bool(fast)}


def freeze_startup_objects() -> None:
    """Move every object alive now into the garbage collector's permanent generation
    (`gc.freeze`): the imported modules and the built trainer, about 380,000 objects in a SAC
    run. Python's full collections then scan only what training creates; with those objects in
    reach each took 0.19 s on the 2-core CPU of the benchmarks, a dozen or more per 20k-step SAC
    run. `drl train` calls it once the trainer is built."""
    gc.freeze()
