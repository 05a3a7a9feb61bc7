"""Checkpoint tensors that live in the file's pages, and giving those pages back.

A tensor read in its stored dtype is a view of a private (copy-on-write) memory map of the checkpoint file: loading
touches nothing, and a page costs resident memory only once something reads it. Once an export has read the weights
(quantization), `release()` asks the kernel to reclaim their pages (MADV_PAGEOUT); the tensors stay valid and a later
read faults the bytes back in from the file. A 0.5B bf16 model's 1 GB then no longer sits in the export's peak.

MADV_PAGEOUT never loses data: a page that was written (a private copy) is anonymous memory, which the kernel only
reclaims to swap, so writing into a loaded weight stays safe. Like every memory-mapped loader (safetensors,
transformers, torch.load(mmap=True)), the checkpoint file must not be overwritten while a model loaded from it is used.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import mmap
import sys
from collections.abc import Iterable
from pathlib import Path

import torch

log = logging.getLogger(__name__)

MADV_PAGEOUT = 21  # Linux >= 5.4; Python's mmap module does not name it
_PAGE = mmap.PAGESIZE


def map_file(path: Path) -> mmap.mmap:
    """A private, copy-on-write map of the whole file (writable, so tensors over it are too; writes stay private)."""
    with path.open("rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)


def tensor_view(mm: mmap.mmap, offset: int, nbytes: int, dtype: torch.dtype, shape: list[int]) -> torch.Tensor | None:
    """A tensor over mm[offset:offset + nbytes], or None when the offset is not aligned to the dtype's size
    (the caller then reads a copy). The tensor keeps the map alive."""
    if offset % dtype.itemsize or nbytes == 0:
        return None
    return torch.frombuffer(mm, dtype=dtype, count=nbytes // dtype.itemsize, offset=offset).reshape(shape)


@functools.cache
def _madvise():
    """libc's madvise, looked up once (None off Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.madvise
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def release(tensors: Iterable[torch.Tensor]) -> int:
    """Hint the kernel to reclaim the whole pages under these tensors (file-backed ones are dropped and re-read on
    the next access; anonymous memory without swap stays). Contents never change. Returns the bytes advised."""
    madvise = _madvise()
    if madvise is None:
        return 0
    advised, seen = 0, set()
    for t in tensors:
        start = t.data_ptr()
        if start in seen or t.numel() == 0 or not t.is_contiguous():
            continue
        seen.add(start)
        first = -(-start // _PAGE) * _PAGE                    # whole pages only: neighbours may still be in use
        last = (start + t.numel() * t.element_size()) // _PAGE * _PAGE
        if last <= first:
            continue
        if madvise(first, last - first, MADV_PAGEOUT) != 0:
            log.debug("madvise(MADV_PAGEOUT) refused (errno %d); pages stay resident", ctypes.get_errno())
            return advised
        advised += last - first
    return advised
