"""Builds edgekit's ONNX Runtime kernel library (libedgekit_ort.so) on first use: g++ against ONNX Runtime's API
headers (headers.py) and the core's int4 linear (edgekit/kernels/csrc/linear_q4.h), cached by a content hash under
the user cache dir (edgekit.kernels.build does the compiling and caching). The library links nothing of ONNX
Runtime: the session hands it the API table when it registers the library."""
from __future__ import annotations

from pathlib import Path

from edgekit.kernels import build as core_build
from edgekit.kernels.q4 import CSRC as CORE_CSRC
from edgekit_onnx.kernels import LIB_NAME, headers

CSRC = Path(__file__).with_name("csrc")
SOURCE = CSRC / "edgekit_ort_ops.cpp"
Q8_SOURCE = CSRC / "linear_q8.h"   # the 8-bit linear and gather (ONNX only)
CORE_SOURCES = (CORE_CSRC / "linear_q4.h", CORE_CSRC / "linear_q4_tiles.h", CORE_CSRC / "linear_q8_tiles.h")


def source_paths() -> list[Path]:
    return [SOURCE, Q8_SOURCE, *CORE_SOURCES]


def compile_command(cxx: str, out: Path, include: Path) -> list[str]:
    # -s: no symbol table in a library that ships inside every artifact folder (its exported entry points stay)
    return [cxx, "-std=c++17", "-O3", "-fPIC", "-shared", "-s", *core_build.isa_flags(), "-fvisibility=hidden", "-DNDEBUG",
            f"-I{include}", f"-I{CORE_CSRC}", f"-I{CSRC}", str(SOURCE), "-o", str(out)]


def content_hash(cxx: str, include: Path) -> str:
    header_files = sorted(include.glob("onnxruntime_*.h"))
    return core_build.content_hash(cxx, [*source_paths(), *header_files],
                                   compile_command(cxx, Path(LIB_NAME), Path("ORT_INCLUDE")), "onnxruntime kernels")


def build_library(force: bool = False) -> Path:
    """Path of the compiled library, compiling it if this exact source / headers / flags / compiler is not cached."""
    cxx = core_build.find_compiler()
    include = headers.include_dir()
    return core_build.build_cached(LIB_NAME, content_hash(cxx, include),
                                   lambda out: compile_command(cxx, out, include), prefix="ort-", force=force,
                                   what="the edgekit ONNX Runtime kernels")
