"""Run an edgekit ONNX artifact with ONNX Runtime alone (imports only onnxruntime, numpy and the stdlib).

    open_session(folder, threads=None, profile_dir=None) -> session with reset(), forward(tokens, input_pos),
    max_seq_len, last_logits_only, op_profile()

The KV cache stays in place: each layer's past and present are ONE preallocated OrtValue of max_seq_len positions,
bound as both the GroupQueryAttention input and output (its shared-buffer mode), so a decode step copies nothing
but the new token's K/V. This file is pushed to boards as is, so keep it self-contained.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort

log = logging.getLogger("edgekit_onnx.standalone")


class RefusedFileError(RuntimeError):
    """A file the artifact names that this session does not load: an absolute path, one outside the artifact
    folder, a missing file, or a library other than the one the artifact recorded."""


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


def custom_op_libraries(folder: Path, meta: dict) -> list[Path]:
    """The checked paths of meta["custom_op_libraries"]: each inside the folder and, where the artifact recorded
    its hash (meta["file_hashes"]), that very file. All are checked before any is loaded."""
    recorded = meta.get("file_hashes") or {}
    paths = []
    for rel in meta.get("custom_op_libraries", []):
        path = inside(folder, rel, "custom_op_libraries entry")
        want = (recorded.get(rel) or {}).get("sha256")
        if want is not None:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            if h.hexdigest() != want:
                raise RefusedFileError(f"{path} is not the library the artifact recorded (sha256 differs); it was "
                                       "altered after export")
        paths.append(path)
    return paths


class RuntimeTooOldError(RuntimeError):
    """This onnxruntime is older than the export's min_onnxruntime: some of its kernels would refuse the graph, or
    (GroupQueryAttention's local_window_size before 1.24) silently compute another model."""


def _release(version: str) -> tuple[int, int]:
    major, minor = (version.split(".") + ["0"])[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def check_runtime(meta: dict) -> None:
    need = meta.get("min_onnxruntime")
    if need and _release(ort.__version__) < _release(need):
        raise RuntimeTooOldError(f"onnxruntime {ort.__version__} is older than {need}, which this export needs "
                                 f"(artifact.json min_onnxruntime): pip install 'onnxruntime>={need}'")


def read_metadata(folder: Path) -> tuple[dict, list]:
    """(metadata, files) from artifact.json (an export) or manifest.json (a bundle)."""
    if (folder / "artifact.json").exists():
        doc = json.loads((folder / "artifact.json").read_text())
        return doc["metadata"], doc["files"]
    if (folder / "manifest.json").exists():
        art = json.loads((folder / "manifest.json").read_text())["artifact"]
        return art["metadata"], art["files"]
    raise FileNotFoundError(f"{folder} holds neither artifact.json nor manifest.json")


class OnnxSession:
    def __init__(self, folder: str | os.PathLike, threads: int | None = None, profile_dir: str | None = None):
        folder = Path(folder)
        meta, files = read_metadata(folder)
        check_runtime(meta)
        io = meta["io"]
        self.max_seq_len = int(meta["max_seq_len"])
        self.last_logits_only = bool(meta["last_logits_only"])
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.intra_op_num_threads = int(threads or 0)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self._profiling = profile_dir is not None
        if self._profiling:
            Path(profile_dir).mkdir(parents=True, exist_ok=True)
            opts.enable_profiling = True
            opts.profile_file_prefix = str(Path(profile_dir) / "ort_profile")
        main = inside(folder, io.get("main") or files[0], "main file")
        for lib in custom_op_libraries(folder, meta):   # edgekit's kernel library (linear_kernel 'edgekit')
            opts.register_custom_ops_library(str(lib))
        self.session = ort.InferenceSession(str(main), opts, providers=["CPUExecutionProvider"])
        self._profile: list[dict] | None = None
        self._bind_cache(io)
        self.length = 0

    def _bind_cache(self, io: dict) -> None:
        shape = [1, int(io["kv_heads"]), self.max_seq_len, int(io["head_dim"])]
        dtype = {"float16": np.float16, "int8": np.int8}.get(io["cache_dtype"], np.float32)
        pairs = [(io["past_key"], io["present_key"], shape, dtype), (io["past_value"], io["present_value"], shape, dtype)]
        if "past_key_scale" in io:   # int8 cache: one fp32 scale per (position, kv head) beside each cache
            pairs += [(io[f"past_{kv}_scale"], io[f"present_{kv}_scale"], shape[:3] + [1], np.float32)
                      for kv in ("key", "value")]
        float_layers = set(io.get("float_cache_layers", ()))   # an int8 export's sliding-window layers: float K/V only
        float_pairs = [(p, q, shape, np.float32) for p, q, _, _ in pairs[:2]]
        self.binding = self.session.io_binding()
        self._cache, self._host = [], []
        for i in range(int(io["layers"])):
            for past, present, buf_shape, buf_dtype in (float_pairs if i in float_layers else pairs):
                host = np.zeros(buf_shape, dtype=buf_dtype)        # zeroed once; the OrtValue views this memory
                buf = ort.OrtValue.ortvalue_from_numpy(host, "cpu", 0)
                self._host.append(host)
                self.binding.bind_ortvalue_input(past % i, buf)
                self.binding.bind_ortvalue_output(present % i, buf)   # same buffer: GQA appends in place
                self._cache.append(buf)
        self._logits_index = len(self._cache)   # outputs come back in binding order: the caches, then logits

    def reset(self) -> None:
        self.length = 0   # positions beyond `length` are never read: GQA masks by seqlens_k, no zeroing needed

    def forward(self, tokens: np.ndarray, input_pos: np.ndarray) -> np.ndarray:
        """tokens int64[1,T], input_pos int64[T] (consecutive, starting at or before the cached length)."""
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
        pos = np.asarray(input_pos, dtype=np.int64)
        t, start = tokens.shape[1], int(pos[0])
        if pos.shape != (t,) or np.any(pos != np.arange(start, start + t)):
            raise ValueError(f"input_pos must be {t} consecutive positions, got {pos.tolist()[:8]}")
        if start > self.length or start + t > self.max_seq_len:
            raise ValueError(f"positions {start}..{start + t - 1} do not follow the cached {self.length} tokens "
                             f"within max_seq_len {self.max_seq_len}")
        self.binding.bind_cpu_input("input_ids", tokens)
        self.binding.bind_cpu_input("attention_mask", np.ones((1, start + t), dtype=np.int64))
        self.binding.bind_output("logits", "cpu")   # (re)bound per call: its shape follows T
        self.session.run_with_iobinding(self.binding)
        self.length = start + t
        return self.binding.get_outputs()[self._logits_index].numpy()

    def op_profile(self) -> list[dict]:
        """Per-op timings from ORT's Chrome-trace profile: [{name, op_type, calls, total_ms}], slowest first."""
        if not self._profiling:
            raise RuntimeError("op_profile() needs open_session(..., profile_dir=...)")
        if self._profile is None:
            trace = json.loads(Path(self.session.end_profiling()).read_text())
            self._profile = summarize_profile(trace)
        return self._profile


def summarize_profile(trace: list[dict]) -> list[dict]:
    rows: dict[str, dict] = defaultdict(lambda: {"calls": 0, "total_ms": 0.0})
    for ev in trace:
        if ev.get("cat") != "Node" or not str(ev.get("name", "")).endswith("_kernel_time"):
            continue
        name = ev["name"][: -len("_kernel_time")]
        row = rows[name]
        row["op_type"] = ev.get("args", {}).get("op_name", "")
        row["calls"] += 1
        row["total_ms"] += float(ev.get("dur", 0)) / 1000.0
    out = [{"name": n, "op_type": r["op_type"], "calls": r["calls"], "total_ms": round(r["total_ms"], 4)}
           for n, r in rows.items()]
    return sorted(out, key=lambda r: -r["total_ms"])


def open_session(folder: str | os.PathLike, threads: int | None = None, profile_dir: str | None = None) -> OnnxSession:
    return OnnxSession(folder, threads=threads, profile_dir=profile_dir)
