"""Run an edgekit ExecuTorch artifact with nothing but the ExecuTorch runtime (+ torch, which its pybindings need),
numpy and the standard library. Device runners (ssh boards), bundles and the host Session all use this file.

    sess = open_session(folder, threads=2, profile_dir=None)
    logits = sess.forward(tokens_int64[1, T], input_pos_int64[T])   # float32 [1, T, V] or [1, 1, V]
    sess.reset()                                                     # a fresh KV cache
    sess.op_profile()                                                # with profile_dir: per-op timings (ETDump)
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import os
import sys
import threading
import types
from pathlib import Path

import numpy as np
import torch

# Process-wide, in sys.modules rather than in this module: a bundle's copy of this file and the installed one share
# it, so a library loaded through either is not loaded again by the other (ExecuTorch aborts the process when one
# operator is registered twice).
_REGISTRY = "_edgekit_executorch_kernel_registry"


class RefusedFileError(RuntimeError):
    """A file the artifact names that this session does not load: an absolute path, one outside the artifact
    folder, a missing file, a library other than the one the artifact recorded, or another build of a library
    this process has loaded already."""


def read_artifact_meta(folder: Path) -> dict:
    """The artifact entry of artifact.json (an export) or of manifest.json (a bundle): files, main, metadata."""
    if (folder / "artifact.json").exists():
        doc = json.loads((folder / "artifact.json").read_text())
    elif (folder / "manifest.json").exists():
        doc = json.loads((folder / "manifest.json").read_text())["artifact"]
    else:
        raise FileNotFoundError(f"{folder} has neither artifact.json nor manifest.json")
    doc.setdefault("main", doc["files"][0])
    return doc


def inside(folder: Path, rel: str, what: str) -> Path:
    """folder/rel with symlinks resolved, if that is a file inside folder; RefusedFileError naming it otherwise."""
    if not isinstance(rel, str) or not rel:
        raise RefusedFileError(f"{what} {rel!r} is not a path; expected one relative to the artifact folder")
    if os.path.isabs(rel):
        raise RefusedFileError(f"{what} {rel!r} is an absolute path; only files inside the artifact folder "
                                 f"{folder} are loaded (a relative path such as kernels/<library>.so): export again")
    root = folder.resolve()
    path = (root / rel).resolve()
    if root not in path.parents:
        raise RefusedFileError(f"{what} {rel!r} resolves to {path}, outside the artifact folder {root}; only files "
                                 "inside it are loaded")
    if not path.is_file():
        raise RefusedFileError(f"{what} {rel!r} is not a file in {root}")
    return path


def load_library(path: Path, expected_sha256: str | None = None) -> ctypes.CDLL:
    """dlopen(path, RTLD_GLOBAL) once per process per content hash: a second copy of the same library (another
    bundle, the build cache) returns the loaded one. Another build under the same file name is refused: its
    operators are registered already."""
    digest = _sha256(path)
    if expected_sha256 is not None and digest != expected_sha256:
        raise RefusedFileError(f"{path} is not the library the artifact recorded (sha256 {digest[:16]}..., "
                                 f"recorded {expected_sha256[:16]}...); it was altered after export")
    reg = _registry()
    with reg.lock:
        if digest in reg.by_sha:
            return reg.by_sha[digest]
        other = reg.by_name.get(path.name)
        if other is not None:
            raise RefusedFileError(f"{path} (sha256 {digest[:16]}...) is another build of {path.name}, of which "
                                     f"{other[1]} (sha256 {other[0][:16]}...) is loaded in this process already; "
                                     "ExecuTorch cannot register the same operators twice: run it in a new process")
        lib = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        reg.by_sha[digest] = lib
        reg.by_name[path.name] = (digest, path)
        return lib


def _registry() -> types.ModuleType:
    reg = sys.modules.get(_REGISTRY)
    if reg is None:
        reg = types.ModuleType(_REGISTRY)
        reg.lock, reg.by_sha, reg.by_name = threading.Lock(), {}, {}
        reg = sys.modules.setdefault(_REGISTRY, reg)
    return reg


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _prepare_runtime(folder: Path, metadata: dict) -> None:
    """Registers every kernel the .pte needs before it loads: ExecuTorch's LLM and quantized kernels, then each
    library in metadata["custom_op_libraries"] (paths relative to the folder, e.g. edgekit's kernels in kernels/),
    with RTLD_GLOBAL so its static registrations run. Every path is checked before any library loads; a library
    the artifact recorded a hash for (metadata["file_hashes"]) must match it."""
    import executorch.extension.llm.custom_ops.custom_ops
    import executorch.kernels.quantized  # noqa: F401  (quantized_decomposed::embedding_*)

    recorded = metadata.get("file_hashes") or {}
    libs = [(inside(folder, rel, "custom_op_libraries entry"), (recorded.get(rel) or {}).get("sha256"))
            for rel in metadata.get("custom_op_libraries", [])]
    for path, sha in libs:
        load_library(path, sha)


def native_log_path() -> Path:
    """Where the runtime's own output goes when it is kept off the terminal: $EDGEKIT_NATIVE_LOG, else
    edgekit-native.log in the user's cache folder ($EDGEKIT_CACHE_DIR, $XDG_CACHE_HOME/edgekit, ~/.cache/edgekit;
    the same folder edgekit keeps its other caches in). Per user, so one user's file never blocks another's."""
    if os.environ.get("EDGEKIT_NATIVE_LOG"):
        return Path(os.environ["EDGEKIT_NATIVE_LOG"])
    if os.environ.get("EDGEKIT_CACHE_DIR"):
        base = Path(os.environ["EDGEKIT_CACHE_DIR"])
    elif os.environ.get("XDG_CACHE_HOME"):
        base = Path(os.environ["XDG_CACHE_HOME"]) / "edgekit"
    else:
        try:
            base = Path.home() / ".cache" / "edgekit"
        except RuntimeError:   # no home folder (a service account): the temp folder
            import tempfile

            base = Path(tempfile.gettempdir())
    return base / "edgekit-native.log"


_quiet_lock = threading.RLock()   # fds 1 and 2 belong to the whole process: one redirection at a time
_quiet_depth = 0
_announced: set = set()
REPLAY_ON_ERROR = 8192            # bytes of the runtime's output shown on stderr when a call inside fails


@contextlib.contextmanager
def quiet_native_output():
    """Runs the block with the process's fds 1 and 2 pointing at native_log_path(), then puts them back (also when
    the block raises).

    ExecuTorch's C++ runtime writes straight to fd 2 (five `[cpuinfo_utils.cpp:…]` lines when its thread pool starts,
    `[threadpool.cpp:…] Resetting threadpool`, errors of a failed load), below Python's logging and sys.stderr, so
    only a redirection of the fd keeps those lines from landing between an app's own output; fd 1 goes along in case
    a library prints there. It applies when EDGEKIT_QUIET_THIRD_PARTY=1 (edgekit's CLI sets it unless -vv, which
    shows other libraries' output); otherwise the block runs untouched. Wrap only the native calls (starting the
    runtime, loading a program): the fds are the whole process's, so whatever Python prints meanwhile, from any
    thread, goes to the file too. If the block raises, what was written meanwhile is copied to stderr, since it
    usually says why. Nested uses redirect once.
    """
    global _quiet_depth
    if os.environ.get("EDGEKIT_QUIET_THIRD_PARTY") != "1":
        yield
        return
    with _quiet_lock:
        if _quiet_depth:
            _quiet_depth += 1
            try:
                yield
            finally:
                _quiet_depth -= 1
            return
        path = native_log_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            log_fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        except OSError as e:    # an unwritable log path: keep the lines on the terminal rather than fail the session
            logging.getLogger(__name__).debug("native output stays on the terminal: cannot open %s (%s)", path, e)
            yield
            return
        if path not in _announced:   # once per process and file: sessions load again on every reset()
            _announced.add(path)
            logging.getLogger(__name__).debug("ExecuTorch runtime output goes to %s", path)
        start = os.lseek(log_fd, 0, os.SEEK_END)
        _flush()
        saved = [os.dup(1), os.dup(2)]
        failed = False
        _quiet_depth = 1
        try:
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)
            yield
        except BaseException:
            failed = True
            raise
        finally:
            _quiet_depth = 0
            _flush()   # what Python wrote inside goes to the file too, not to the terminal after the restore
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            if failed:
                _replay(log_fd, start, path)
            os.close(log_fd)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _replay(log_fd: int, start: int, path: Path) -> None:
    """Copies what was written to the log since `start` (at most its last REPLAY_ON_ERROR bytes) to stderr."""
    with contextlib.suppress(OSError):
        end = os.lseek(log_fd, 0, os.SEEK_END)
        begin = max(start, end - REPLAY_ON_ERROR)
        text = os.pread(log_fd, end - begin, begin).decode("utf-8", "replace") if end > begin else ""
        if text:
            sys.stderr.write(f"ExecuTorch runtime output before the error (also in {path}):\n{text}")
            if not text.endswith("\n"):
                sys.stderr.write("\n")
            sys.stderr.flush()


class PteSession:
    """One loaded `forward` method; its KV cache lives in the method's mutable buffers."""

    def __init__(self, folder: str | Path, threads: int | None = None, profile_dir: str | Path | None = None,
                 doc: dict | None = None):
        self.folder = Path(folder)
        doc = doc if doc is not None else read_artifact_meta(self.folder)  # doc: an artifact not yet saved
        self.metadata = doc.get("metadata", {})
        self.pte = inside(self.folder, doc.get("main", doc["files"][0]), "main file")
        self.max_seq_len = int(self.metadata["max_seq_len"])
        self.last_logits_only = bool(self.metadata.get("last_logits_only", False))
        self.profile_dir = Path(profile_dir) if profile_dir is not None else None
        from executorch.runtime import Runtime

        _prepare_runtime(self.folder, self.metadata)   # imports and dlopen: Python's own messages stay visible
        from executorch.extension.pybindings import portable_lib

        # ExecuTorch starts its thread pool on first use (the first load, or the first forward of a program without
        # a delegate), logging the CPU it found; start it here, inside the redirection, so no later call does
        with quiet_native_output():
            if threads:
                portable_lib._unsafe_reset_threadpool(int(threads))
            elif hasattr(portable_lib, "_threadpool_get_thread_count"):
                portable_lib._threadpool_get_thread_count()
            self._runtime = Runtime.get()
        self._programs: list = []  # programs run so far (their ETDumps), when profiling
        self._load()

    def _load(self) -> None:
        # reset() loads again; a load is rare and slow next to the redirection, and a failed one logs why here
        with quiet_native_output():
            program = self._runtime.load_program(self.pte, enable_etdump=self.profile_dir is not None)
            self._program, self._method = program, program.load_method("forward")
        if self.profile_dir is not None:
            self._programs.append(program)

    def reset(self) -> None:
        """A fresh KV cache: the buffers persist across execute() calls of one method, so load it again."""
        self._load()

    def forward(self, tokens: np.ndarray, input_pos: np.ndarray) -> np.ndarray:
        tokens = np.ascontiguousarray(tokens, dtype=np.int64).reshape(1, -1)
        input_pos = np.ascontiguousarray(input_pos, dtype=np.int64).reshape(-1)
        if tokens.shape[1] != input_pos.shape[0]:
            raise ValueError(f"tokens {tokens.shape} and input_pos {input_pos.shape} differ in length")
        if input_pos.size == 0 or input_pos[-1] >= self.max_seq_len:
            raise ValueError(f"positions up to {int(input_pos[-1]) if input_pos.size else '?'} exceed the "
                             f"artifact's max_seq_len {self.max_seq_len}")
        # clone_outputs=False: the pybindings' own clone is an ATen copy that torch parallelizes with OpenMP above 32k
        # elements (every step's logits), and libgomp's worker then spins for a while after each step on the cores
        # ExecuTorch's thread pool needs (perf, 0.5B decode: 26 % of all cycles in libgomp). numpy copies the logits
        # on this thread instead; the runtime's buffer is only valid until the next execute, so the copy is needed.
        inputs = [torch.from_numpy(tokens), torch.from_numpy(input_pos)]
        raw = getattr(self._method, "_method", None)  # executorch.runtime.Method wraps the pybindings' method
        if raw is None:
            return self._method.execute(inputs)[0].detach().numpy().astype(np.float32, copy=False)
        out = raw(inputs, clone_outputs=False)[0]
        return np.array(out.detach().numpy(), dtype=np.float32, copy=True)

    def write_etdump(self) -> list[Path]:
        """Writes one .etdp per program loaded so far (reset() loads a new one) into profile_dir."""
        if self.profile_dir is None:
            raise RuntimeError("profiling is off: open_session(..., profile_dir=DIR)")
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, program in enumerate(self._programs):
            path = self.profile_dir / f"etdump_{i}.etdp"
            program.write_etdump_result_to_file(str(path), str(self.profile_dir / f"debug_{i}.bin"))
            paths.append(path)
        return paths

    def op_profile(self) -> list[dict]:
        """Per-op timings over every forward so far: [{name, op_type, calls, total_ms}], slowest first."""
        from executorch.devtools import Inspector

        totals: dict[tuple[str, str], list[float]] = {}
        for path in self.write_etdump():
            if not path.exists() or path.stat().st_size == 0:
                continue
            inspector = Inspector(etdump_path=str(path))
            for block in inspector.event_blocks:
                for event in block.events:
                    if event.perf_data is None or event.name in ("Method::execute", "Program::load_method"):
                        continue
                    op_type = "delegate" if event.delegate_backend_name or event.is_delegated_op else "portable"
                    key = (event.name, op_type)
                    acc = totals.setdefault(key, [0, 0.0])
                    acc[0] += len(event.perf_data.raw)
                    acc[1] += float(sum(event.perf_data.raw))
        rows = [{"name": n, "op_type": t, "calls": int(c), "total_ms": round(ms, 4)} for (n, t), (c, ms) in totals.items()]
        return sorted(rows, key=lambda r: -r["total_ms"])


def open_session(folder: str | Path, threads: int | None = None, profile_dir: str | Path | None = None) -> PteSession:
    return PteSession(folder, threads=threads, profile_dir=profile_dir)
