"""Compiles edgekit's C++ kernel libraries on first use, cached by a content hash under the user cache dir.

Shared by the targets whose runtimes load compiled kernels (ExecuTorch, ONNX Runtime): each target says what to
compile against its own runtime's headers; this module finds the compiler, picks the host CPU's ISA flags, hashes
sources + command + compiler, and builds atomically (a concurrent build never sees a half-written library). No heavy
import here: the core stays free of executorch / onnxruntime.
"""
from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from edgekit.errors import ExportError, MissingDependency

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """$EDGEKIT_CACHE_DIR/kernels, else $XDG_CACHE_HOME/edgekit/kernels, else ~/.cache/edgekit/kernels."""
    if os.environ.get("EDGEKIT_CACHE_DIR"):
        return Path(os.environ["EDGEKIT_CACHE_DIR"]) / "kernels"
    base = Path(os.environ["XDG_CACHE_HOME"]) if os.environ.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "edgekit" / "kernels"


def find_compiler() -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if not cxx:
        raise MissingDependency("no C++ compiler found (looked for $CXX, g++, c++, clang++); edgekit's kernels are "
                                "compiled on first use: install one, e.g. `apt-get install g++`")
    return cxx


def _cpu_flags() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def isa_flags() -> list[str]:
    """-mavx2 -mfma where the host CPU has them (x86-64), plus -mf16c (fp16 scales) and AVX-512 VNNI (the int4
    linear's dot products) where it has those; NEON with dot products on aarch64 cores that have them (asimddp),
    else baseline NEON / portable."""
    machine = platform.machine().lower()
    flags = _cpu_flags()
    if machine in ("x86_64", "amd64"):
        if not (" avx2" in flags and " fma" in flags):
            return []
        vnni = all(f" {f}" in flags for f in ("avx512f", "avx512bw", "avx512vl", "avx512_vnni"))
        return (["-mavx2", "-mfma"] + (["-mf16c"] if " f16c" in flags else []) +
                (["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni"] if vnni else []))
    if machine in ("aarch64", "arm64"):
        return ["-march=armv8.2-a+dotprod"] if " asimddp" in flags else []
    return []


def content_hash(cxx: str, sources: Iterable[Path], command: list[str], extra: str = "") -> str:
    """sha256 over the sources (name and bytes), the full compile command, the compiler's version and `extra`."""
    h = hashlib.sha256()
    for path in sources:
        h.update(path.name.encode() + b"\0" + Path(path).read_bytes())
    h.update(" ".join(map(str, command)).encode())
    try:
        h.update(subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout.encode())
    except (OSError, subprocess.TimeoutExpired):
        pass
    h.update(f"{extra} {sys.platform} {platform.machine()}".encode())
    return h.hexdigest()[:16]


def build_cached(lib_name: str, key: str, command: Callable[[Path], list[str]], *, prefix: str = "",
                 force: bool = False, what: str = "edgekit kernels") -> Path:
    """cache_root()/<prefix><key>/<lib_name>, compiling it with command(output path) unless it is there already."""
    folder = cache_root() / f"{prefix}{key}"
    target = folder / lib_name
    if target.exists() and not force:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        tmp_out = Path(tmp) / lib_name
        cmd = [str(c) for c in command(tmp_out)]
        log.info("compiling %s: %s", what, " ".join(cmd))
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise ExportError(f"compiling {what} failed ({cmd[0]}, exit {res.returncode}):\n{res.stderr[-4000:]}")
        os.replace(tmp_out, target)
    return target
