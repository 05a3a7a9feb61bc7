"""Run an edgekit ExecuTorch artifact with nothing but the ExecuTorch runtime (+ torch, which its pybindings need),
numpy and the standard library. Device runners (ssh boards), bundles and the host Session all use this file.

    sess = open_session(folder, threads=2, profile_dir=None)
    logits = sess.forward(tokens_int64[1, T], input_pos_int64[T])   # float32 [1, T, V] or [1, 1, V]
    sess.reset()                                                     # a fresh KV cache
    sess.op_profile()                                                # with profile_dir: per-op timings (ETDump)
"""
from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path

import numpy as np
import torch

_LOADED_LIBS: set[str] = set()


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


def _prepare_runtime(folder: Path, metadata: dict) -> None:
    """Registers every kernel the .pte needs before it loads: ExecuTorch's LLM and quantized kernels, then any
    library listed in metadata["custom_op_libraries"] (paths relative to the folder, or absolute; e.g. the int8
    KV-cache kernel of issue 6), loaded once per process with RTLD_GLOBAL so its static registrations run."""
    import executorch.extension.llm.custom_ops.custom_ops
    import executorch.kernels.quantized  # noqa: F401  (quantized_decomposed::embedding_*)

    for lib in metadata.get("custom_op_libraries", []):
        path = Path(lib) if os.path.isabs(lib) else folder / lib
        key = str(path.resolve())
        if key not in _LOADED_LIBS:
            ctypes.CDLL(key, mode=ctypes.RTLD_GLOBAL)
            _LOADED_LIBS.add(key)


class PteSession:
    """One loaded `forward` method; its KV cache lives in the method's mutable buffers."""

    def __init__(self, folder: str | Path, threads: int | None = None, profile_dir: str | Path | None = None,
                 doc: dict | None = None):
        from executorch.runtime import Runtime

        self.folder = Path(folder)
        doc = doc if doc is not None else read_artifact_meta(self.folder)  # doc: an artifact not yet saved
        self.metadata = doc.get("metadata", {})
        self.pte = self.folder / doc.get("main", doc["files"][0])
        self.max_seq_len = int(self.metadata["max_seq_len"])
        self.last_logits_only = bool(self.metadata.get("last_logits_only", False))
        self.profile_dir = Path(profile_dir) if profile_dir is not None else None
        _prepare_runtime(self.folder, self.metadata)
        if threads:
            from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

            _unsafe_reset_threadpool(int(threads))
        self._runtime = Runtime.get()
        self._programs: list = []  # programs run so far (their ETDumps), when profiling
        self._load()

    def _load(self) -> None:
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
