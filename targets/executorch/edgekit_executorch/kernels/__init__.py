"""edgekit's compiled kernels for ExecuTorch, registered with the runtime when the library loads: KV-cache attention
(`edgekit::attention.out`, int8 or fp32 caches), the int8 cache write (`edgekit::update_int8_cache.out`), the fused
projection's cache write + attention (`edgekit::qkv_cache_attention.out`, cache_attention.py); the 8da4w linear
(`edgekit::linear_q4.out`) and its fused layer forms (`edgekit::fused_linear_q4.out`, `edgekit::qkv_rope_q4.out`), each
with an optional trailing `Tensor? mins=None` (per-group minimums: GGUF Q4_1's grid) and bf16 or fp16 scales; a Q8_0
table's head and lookup over one constant (`edgekit::linear_q8.out`, `edgekit::embedding_q8.out`, linear_q8.py).

Sources in csrc/: attention_core.h (ExecuTorch-free core, with isa_portable.h / isa_avx2.h / isa_neon.h) and
edgekit_kernels_et.cpp; the int4 linear core linear_q4.h is the core's (edgekit/kernels/csrc, shared with the ONNX
Runtime kernels). edgekit_kernels_et.cpp is the EXECUTORCH_LIBRARY wrapper + ctypes entry points. Built on first
use (build.py). Op schemas and PyTorch references: linear_q4.py; the layer swap:
fused_block.py.

Hooks for the ExecuTorch target:
- export time: `runtime_libraries()` -> the library paths to record as artifact metadata `custom_op_libraries`;
  `source_files()` -> the sources a bundle ships for app builds.
- load time: `load_kernel_library()`; the standalone session loads the artifact's own copies (kernels/), each
  content hash once per process.
"""
from __future__ import annotations

import ctypes
import threading
from pathlib import Path

from edgekit_executorch.kernels.build import build_kernel_library, source_paths

__all__ = ["build_kernel_library", "load_kernel_library", "runtime_libraries", "source_files"]

_lock = threading.Lock()
_default: ctypes.CDLL | None = None


def load_kernel_library(path: Path | None = None) -> ctypes.CDLL:
    """Builds (if needed; a cache hit is checksum-verified) and loads the library once per process per content hash
    (the standalone session's registry, shared with every artifact it opens), RTLD_GLOBAL, after ExecuTorch's
    pybindings so its EXECUTORCH_LIBRARY registrations land in the operator registry (libexecutorch.so) they use."""
    global _default
    explicit = path is not None
    if not explicit and _default is not None:
        return _default  # the hot path (tests, benchmarks): no hashing, no compiler probe
    from executorch.extension.pybindings import portable_lib  # noqa: F401  (loads libexecutorch.so first)

    from edgekit_executorch.standalone_session import load_library

    path = Path(path) if path is not None else build_kernel_library()
    with _lock:
        lib = load_library(path.resolve())
        _declare(lib)
        if not explicit:
            _default = lib
        return lib


def runtime_libraries() -> list[Path]:
    """The verified cached builds an edgekit-kernel .pte needs loaded before it runs; the export copies them into
    the artifact's kernels/ and records those copies as metadata `custom_op_libraries`."""
    return [build_kernel_library()]


def source_files() -> list[Path]:
    """The C++ sources an app build compiles in (core + ExecuTorch wrapper)."""
    return source_paths()


def _declare(lib: ctypes.CDLL) -> None:
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    lib.edgekit_attention.argtypes = [p] * 7 + [i64] * 6 + [ctypes.c_int] * 2
    lib.edgekit_attention.restype = ctypes.c_int
    lib.edgekit_update_int8_cache.argtypes = [p] * 4 + [i64] * 4
    lib.edgekit_update_int8_cache.restype = ctypes.c_int
    lib.edgekit_qkv_cache_attention.argtypes = [p] * 5 + [i64] * 5
    lib.edgekit_qkv_cache_attention.restype = ctypes.c_int
    lib.edgekit_kernels_isa.restype = ctypes.c_char_p
    lib.edgekit_linear_q4.argtypes = [p] * 6 + [i64] * 4 + [ctypes.c_int] * 2
    lib.edgekit_linear_q4.restype = ctypes.c_int
    lib.edgekit_linear_q4_fused.argtypes = ([p] * 6 + [i64] * 4 + [ctypes.c_int, p, ctypes.c_float] + [p] * 5 +
                                            [i64] * 3 + [ctypes.c_int, p, ctypes.c_int, ctypes.c_int])
    lib.edgekit_linear_q4_fused.restype = ctypes.c_int
    lib.edgekit_linear_q8.argtypes = [p] * 4 + [ctypes.c_float, p] + [i64] * 4 + [ctypes.c_int] * 2
    lib.edgekit_linear_q8.restype = ctypes.c_int
    lib.edgekit_linear_q4_isa.restype = ctypes.c_char_p
    lib.edgekit_kernels_threads.restype = ctypes.c_int64
