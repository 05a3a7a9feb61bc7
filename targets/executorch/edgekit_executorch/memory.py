"""Give freed heap memory back to the OS between export stages (peak RSS).

ExecuTorch's partitioners build the transitive closure of every node's users and inputs as Python sets (O(nodes²):
~0.47 GB for the 0.5B-shaped decoder) and drop them once partitions are formed. The sets' tables are malloc'ed below
glibc's mmap threshold, so after they are freed the heap keeps the pages and the RSS stays up through packing and
serialization, where the export's peak is. malloc_trim(0) returns them.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging

log = logging.getLogger(__name__)
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
