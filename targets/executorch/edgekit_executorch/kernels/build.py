"""Builds the edgekit kernel library on first use: g++ against the headers and libraries the executorch wheel
ships, cached by a content hash (sources + flags + compiler + executorch version) under the user cache dir."""
from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from edgekit.errors import ExportError, MissingDependency

log = logging.getLogger(__name__)

CSRC = Path(__file__).with_name("csrc")
LIB_NAME = "libedgekit_kernels.so"
ET_SOURCE = "edgekit_kernels_et.cpp"
SOURCES = ("attention_core.h", "isa_portable.h", "isa_avx2.h", "isa_neon.h", "linear_q4.h", ET_SOURCE)


def cache_root() -> Path:
    """$EDGEKIT_CACHE_DIR, else $XDG_CACHE_HOME/edgekit, else ~/.cache/edgekit; kernels live in kernels/<hash>/."""
    if os.environ.get("EDGEKIT_CACHE_DIR"):
        return Path(os.environ["EDGEKIT_CACHE_DIR"]) / "kernels"
    base = Path(os.environ["XDG_CACHE_HOME"]) if os.environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "edgekit" / "kernels"


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


def find_compiler() -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if not cxx:
        raise MissingDependency("no C++ compiler found (looked for $CXX, g++, c++, clang++); the int8 KV-cache "
                                "kernels are compiled on first use: install one, e.g. `apt-get install g++`")
    return cxx


def isa_flags() -> list[str]:
    """-mavx2 -mfma where the host CPU has them (x86-64), plus AVX-512 VNNI (the int4 linear's dot products) where it
    has that; NEON with dot products on aarch64 cores that have them (asimddp), else baseline NEON / portable."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            flags = ""
        if not (" avx2" in flags and " fma" in flags):
            return []
        vnni = all(f" {f}" in flags for f in ("avx512f", "avx512bw", "avx512vl", "avx512_vnni"))
        return ["-mavx2", "-mfma"] + (["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni"] if vnni else [])
    if machine in ("aarch64", "arm64"):
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            flags = ""
        return ["-march=armv8.2-a+dotprod"] if " asimddp" in flags else []
    return []


def compile_command(cxx: str, out: Path) -> list[str]:
    inc, lib = executorch_paths()
    c10 = inc / "executorch" / "runtime" / "core" / "portable_type" / "c10"
    return [cxx, "-std=c++17", "-O3", "-fPIC", "-shared", *isa_flags(), "-fvisibility=hidden",
            "-DC10_USING_CUSTOM_GENERATED_MACROS", "-DET_USE_THREADPOOL", "-DNDEBUG",
            f"-I{inc}", f"-I{c10}", str(CSRC / ET_SOURCE), "-o", str(out),
            f"-L{lib}", "-lexecutorch", "-lexecutorch_threadpool", f"-Wl,-rpath,{lib}"]


def content_hash(cxx: str) -> str:
    """sha256 over the sources, the full command (with a fixed output name), the compiler and executorch."""
    h = hashlib.sha256()
    for name in SOURCES:
        h.update(name.encode() + b"\0" + (CSRC / name).read_bytes())
    h.update(" ".join(compile_command(cxx, Path(LIB_NAME))).encode())
    try:
        h.update(subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout.encode())
    except (OSError, subprocess.TimeoutExpired):
        pass
    from executorch.version import __version__ as et_version

    h.update(f"{et_version} {sys.platform} {platform.machine()}".encode())
    return h.hexdigest()[:16]


def build_kernel_library(force: bool = False) -> Path:
    """Path of the compiled kernel library, compiling it if this exact source/flags/toolchain is not cached."""
    cxx = find_compiler()
    folder = cache_root() / content_hash(cxx)
    target = folder / LIB_NAME
    if target.exists() and not force:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        tmp_out = Path(tmp) / LIB_NAME
        cmd = compile_command(cxx, tmp_out)
        log.info("compiling edgekit kernels: %s", " ".join(cmd))
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise ExportError(f"compiling the edgekit kernels failed ({cxx}, exit {res.returncode}):\n"
                              f"{res.stderr[-4000:]}")
        os.replace(tmp_out, target)  # atomic: a concurrent build never sees a half-written library
    return target
