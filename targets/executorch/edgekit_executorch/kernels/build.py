"""Builds the edgekit kernel library for ExecuTorch on first use: g++ against the headers and libraries the executorch
wheel ships, cached by a content hash (sources + flags + compiler + executorch version) under the user cache dir
(edgekit.kernels.build does the compiling and caching)."""
from __future__ import annotations

import logging
from pathlib import Path

from edgekit.errors import MissingDependency
from edgekit.kernels import build as core_build
from edgekit.kernels.build import find_compiler, isa_flags
from edgekit.kernels.q4 import CSRC as CORE_CSRC

log = logging.getLogger(__name__)

CSRC = Path(__file__).with_name("csrc")
LIB_NAME = "libedgekit_kernels.so"
ET_SOURCE = "edgekit_kernels_et.cpp"
SOURCES = ("attention_core.h", "isa_portable.h", "isa_avx2.h", "isa_neon.h", ET_SOURCE)
CORE_SOURCES = ("linear_q4.h", "linear_q4_tiles.h", "linear_q8_tiles.h", "guided_split.h")   # shared with the ONNX Runtime kernels: edgekit/kernels/csrc


def source_paths() -> list[Path]:
    return [CSRC / name for name in SOURCES] + [CORE_CSRC / name for name in CORE_SOURCES]


def executorch_paths() -> tuple[Path, Path]:
    """(include dir, lib dir) of the installed executorch wheel."""
    try:
        import executorch
    except ImportError as e:
        raise MissingDependency("building the edgekit kernels needs executorch==1.5.1; "
                                "pip install edgekit-target-executorch") from e
    # a namespace package (no __file__), and other folders named executorch may sit on sys.path (tests/)
    roots = [Path(p) for p in executorch.__path__]
    for root in roots:
        inc, lib = root / "include", root / "lib"
        if (inc / "executorch" / "runtime").is_dir() and (lib / "libexecutorch.so").exists():
            return inc, lib
    raise MissingDependency(f"no executorch wheel with include/ and lib/libexecutorch.so in {roots}; the edgekit "
                            "kernels need a wheel that ships them (executorch 1.5.1 does)")


def compile_command(cxx: str, out: Path) -> list[str]:
    inc, lib = executorch_paths()
    c10 = inc / "executorch" / "runtime" / "core" / "portable_type" / "c10"
    return [cxx, "-std=c++17", "-O3", "-fPIC", "-shared", *isa_flags(), "-fvisibility=hidden",
            "-DC10_USING_CUSTOM_GENERATED_MACROS", "-DET_USE_THREADPOOL", "-DNDEBUG",
            f"-I{inc}", f"-I{c10}", f"-I{CORE_CSRC}", str(CSRC / ET_SOURCE), "-o", str(out),
            f"-L{lib}", "-lexecutorch", "-lexecutorch_threadpool", f"-Wl,-rpath,{lib}"]


def content_hash(cxx: str) -> str:
    """sha256 over the sources, the full command (with a fixed output name), the compiler and executorch."""
    from executorch.version import __version__ as et_version

    return core_build.content_hash(cxx, source_paths(), compile_command(cxx, Path(LIB_NAME)), f"executorch {et_version}")


def build_kernel_library(force: bool = False) -> Path:
    """Path of the compiled kernel library, compiling it if this exact source/flags/toolchain is not cached."""
    cxx = find_compiler()
    return core_build.build_cached(LIB_NAME, content_hash(cxx), lambda out: compile_command(cxx, out), force=force,
                                   what="the edgekit ExecuTorch kernels")
