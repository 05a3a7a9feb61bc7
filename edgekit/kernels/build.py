"""Compiles edgekit's C++ kernel libraries on first use, cached by a content hash under the user cache dir.

Shared by the targets whose runtimes load compiled kernels (ExecuTorch, ONNX Runtime): each target says what to
compile against its own runtime's headers; this module finds the compiler, picks the host CPU's ISA flags, hashes
sources + command + compiler, and builds atomically (a concurrent build never sees a half-written library). Each build
carries a checksum sidecar, checked on every cache hit: a library that does not match is rebuilt, never loaded. No
heavy import here: the core stays free of executorch / onnxruntime.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from edgekit.errors import ExportError, MissingDependency

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """The kernels folder of edgekit's cache (paths.cache_dir)."""
    from edgekit.paths import cache_dir

    return cache_dir() / "kernels"


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


SIDECAR_SUFFIX = ".sha256.json"   # beside each cached library: {"sha256": ..., "bytes": ...}


def build_cached(lib_name: str, key: str, command: Callable[[Path], list[str]], *, prefix: str = "",
                 force: bool = False, what: str = "edgekit kernels") -> Path:
    """cache_root()/<prefix><key>/<lib_name>, compiling it with command(output path) unless a build whose checksum
    sidecar matches it is there already. A cached library that does not match (truncated by a full disk or a killed
    copy, altered) is never handed out: dlopen of a truncated file faults the process (SIGBUS), so it is rebuilt."""
    folder = cache_root() / f"{prefix}{key}"
    target = folder / lib_name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create the kernel cache folder {folder} ({e.strerror or e}); set "
                          "EDGEKIT_CACHE_DIR to a writable folder") from e
    with _build_lock(folder):   # one builder per key at a time; checks wait for a running build
        if not force:
            problem = cached_problem(target)
            if problem is None:
                return target
            if problem != "is not built yet":
                log.warning("the cached %s at %s %s; rebuilding it", what, target, problem)
        _compile_into(folder, target, command, what)
    return target


def cached_problem(lib: Path) -> str | None:
    """None when `lib` matches its checksum sidecar, else what is wrong with it (for the log)."""
    sidecar = lib.with_name(lib.name + SIDECAR_SUFFIX)
    if not lib.exists() and not sidecar.exists():
        return "is not built yet"
    try:
        want = json.loads(sidecar.read_text())
        want_sha, want_bytes = str(want["sha256"]), int(want["bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"has no valid checksum file ({sidecar.name})"
    try:
        size = lib.stat().st_size
    except OSError:
        return "is missing (its checksum file is there)"
    if size != want_bytes:
        return f"has {size} bytes, {want_bytes} when built (truncated or replaced)"
    if file_digest(lib) != want_sha:
        return "has other contents than when built (sha256 differs)"
    return None


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _compile_into(folder: Path, target: Path, command: Callable[[Path], list[str]], what: str) -> None:
    """Compiles into a temp folder beside `target`, then renames the library and its sidecar into place: a reader
    sees the old pair, or the new library with a sidecar that does not match yet (and rebuilds), never a partial
    library (os.replace swaps whole files; one already mapped by a process stays valid)."""
    sidecar = target.with_name(target.name + SIDECAR_SUFFIX)
    try:
        tmp_ctx = tempfile.TemporaryDirectory(dir=folder)
    except OSError as e:
        raise ExportError(f"cannot write into the kernel cache folder {folder} ({e.strerror or e}); set "
                          "EDGEKIT_CACHE_DIR to a writable folder") from e
    with tmp_ctx as tmp:
        tmp_out = Path(tmp) / target.name
        cmd = [str(c) for c in command(tmp_out)]
        log.info("compiling %s: %s", what, " ".join(cmd))
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise ExportError(f"compiling {what} failed ({cmd[0]}, exit {res.returncode}):\n{res.stderr[-4000:]}")
        tmp_sidecar = Path(tmp) / sidecar.name
        tmp_sidecar.write_text(json.dumps({"sha256": file_digest(tmp_out), "bytes": tmp_out.stat().st_size}) + "\n")
        for f in (tmp_out, tmp_sidecar):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())   # on disk before the rename: a crash leaves the old pair or the new one
        os.replace(tmp_out, target)
        os.replace(tmp_sidecar, sidecar)


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """An exclusive flock on folder/.lock; none where locks are unavailable (the renames keep builds atomic)."""
    try:
        import fcntl

        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except (ImportError, OSError):
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
