"""edgekit's kernels for ONNX Runtime: a custom-op library (domain "edgekit": LinearQ4, GatherQ4, LinearQ8,
GatherQ8) that an ONNX export with `linear_kernel=edgekit` runs its int4 linears and its token embedding in, and a
quantized checkpoint's 8-bit grids (a GGUF's Q8_0 table, tied or not) with fp16 scales, stored once.

Sources: csrc/edgekit_ort_ops.cpp (the ONNX Runtime wrapper) around the core's int4 linear
(edgekit/kernels/csrc/linear_q4.h, the same kernel the ExecuTorch target registers as edgekit::linear_q4) and
csrc/linear_q8.h (the 8-bit linear and gather on MatMulNBits' 8-bit layout, ONNX only). Built on
first use (build.py) against ONNX Runtime's API headers (headers.py). The export copies the library into the
artifact folder (`KERNELS_DIR`), so the folder runs as it is: in edgekit's session, in onnxruntime-genai
(genai_config.json names it) and on a board.
"""
from __future__ import annotations

from pathlib import Path

__all__ = ["DOMAIN", "KERNELS_DIR", "LIB_NAME", "build_library", "source_files"]

DOMAIN = "edgekit"
KERNELS_DIR = "kernels"
LIB_NAME = "libedgekit_ort.so"   # the compiled library (build.py)


# The submodules are imported on use, not here: `python -m edgekit_onnx.kernels.headers` (make setup) then runs
# headers.py once, as __main__, instead of after the package has already imported it.
def build_library(force: bool = False) -> Path:
    """Path of the compiled library (see build.build_library)."""
    from edgekit_onnx.kernels.build import build_library as build

    return build(force=force)


def source_files() -> list[Path]:
    """The C++ sources an app build compiles in (the ONNX Runtime wrapper + the core int4 linear)."""
    from edgekit_onnx.kernels.build import source_paths

    return source_paths()
