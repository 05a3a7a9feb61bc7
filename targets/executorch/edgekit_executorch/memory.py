"""Give freed heap memory back to the OS between export stages (peak RSS).

After lowering, the unlowered program's int8 weights and the partitioners' O(nodes²) dependency sets are garbage, but
glibc keeps most freed blocks in its heap, so the RSS would stay up through serialization. gc + malloc_trim(0) after
lowering took the 0.5B export's serialization stage from 3.07 GB to ~2.5 GB. (Trimming right after partitioning, before
packing, returned nothing measurable: that heap is too fragmented by live graph objects.)
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc

_libc = None


def release_freed_memory() -> None:
    """gc.collect(), then glibc's malloc_trim(0); a no-op where the C library has no malloc_trim (macOS, musl)."""
    global _libc
    gc.collect()
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)
