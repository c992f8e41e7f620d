"""Keep freed host memory in the process (glibc's malloc), so tensors reuse warm pages.

glibc serves allocations above a threshold (128 KiB at first, adapting upwards) with fresh
`mmap` pages and gives freed memory at the top of its heap back to the OS (`M_TRIM_THRESHOLD`).
A training step on the CPU allocates and frees tensors of a few hundred KiB by the dozen
(SAC's 256x256 activations are 256-512 KiB): each such tensor then comes back as new pages, and
every page costs a page fault when first written. A SAC gradient step took 100-600 page faults
and 5.2 ms; with both thresholds fixed high it takes none and 4.3-4.6 ms (2-core Xeon, torch
2.13). Memory the process frees stays with it (up to `TRIM_THRESHOLD` at the heap's top), so
its resident size stays at its peak instead of shrinking.
"""

from __future__ import annotations

import ctypes
import platform

MMAP_THRESHOLD = 32 << 20
"""Allocations up to this size come from the heap (glibc's upper limit on 64-bit)."""
TRIM_THRESHOLD = 256 << 20
"""Free memory at the heap's top is returned to the OS only beyond this."""

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # malloc.h
_kept = False


def keep_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds (process-wide, for the rest of the process); returns
    whether it could (False off glibc, e.g. macOS or musl)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    global _kept
    _kept = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    return _kept


def freed_memory_kept() -> bool:
    """Whether `keep_freed_memory` took effect in this process."""
    return _kept
