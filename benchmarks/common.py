"""Shared measuring helpers for the benchmark scripts (stdlib only at import time; torch only in a child process).

The small public API, meant to be imported by every `benchmarks/bench_<area>.py`:

- `machine_facts() -> dict` and `facts_markdown(facts) -> str`: CPU model, cores, RAM, OS, Python and package versions.
- `read_bandwidth_gbs(threads=2) -> float`: memory read bandwidth, GB/s, as `torch.ones(128M).sum()` (512 MB of
  float32) at `threads` threads, best of several, measured in a child process so the caller's thread settings and
  memory are untouched.
- `run_child(argv, ...) -> ChildResult`: run a command, return its exit code, wall time, PEAK RSS (bytes, from
  `wait4`, i.e. the child and the descendants it waited for) and its output. `run_json_child` also parses the last
  JSON line of its stdout (how the peer scripts report).
- `ModelShape.from_config(cfg)`: the sizes that matter, from an edgekit `ModelConfig`, a HF `config.json` dict or a
  path to one.
- `QuantLayout` (+ `LAYOUTS`): how an artifact stores each kind of weight (bits, group size, scale bytes, KV dtype).
- `theoretical_size_bytes(shape, layout)`: the smallest artifact those weights fit in (tied embeddings stored once,
  no padding, no metadata).
- `decode_bytes_per_token(shape, layout, context)`: bytes one decode step must read: every linear weight, the lm_head,
  one embedding row, the norms, and the K/V cache up to `context` positions.
- `roofline_fraction(decode_tok_s, bytes_per_token, bandwidth_gbs)`: measured decode speed ÷ (bandwidth ÷ bytes per
  token), the fraction of the memory-bandwidth limit reached (1.0 = at the limit).
- `path_bytes(path)`, `tree_sha256(path)`: size of a file or folder; a content hash of a folder (for cache keys).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

GB = 1e9
VERSIONED_PACKAGES = ("edgekit", "torch", "executorch", "onnxruntime", "onnxruntime-genai", "coremltools", "torchao",
                      "transformers", "numpy", "llama-cpp-python")


# ---------------------------------------------------------------- machine facts
def machine_facts(packages: Sequence[str] = VERSIONED_PACKAGES) -> dict[str, Any]:
    """Facts to print beside any number: CPU, cores, RAM, OS, Python and installed package versions."""
    cpu = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    ram = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = int(line.split()[1]) * 1024
    except OSError:
        pass
    versions = {}
    for pkg in packages:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "simd": [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "fma", "neon", "asimd") if f in flags],
        "ram_gib": round(ram / 2**30, 1) if ram else None,
        "os": f"{platform.system()} {platform.release()}",
        "distro": _distro(),
        "python": platform.python_version(),
        "versions": versions,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def _distro() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.platform()


def facts_markdown(facts: Mapping[str, Any]) -> str:
    """The facts as a Markdown bullet list."""
    vers = ", ".join(f"{k} {v}" for k, v in facts.get("versions", {}).items())
    load = facts.get("load_average")
    lines = [
        f"- CPU: {facts['cpu']} ({facts['logical_cores']} logical cores; SIMD: {', '.join(facts['simd']) or '-'})",
        f"- RAM: {facts['ram_gib']} GiB; OS: {facts['os']} ({facts['distro']}); Python {facts['python']}",
        f"- Packages (bench venv): {vers}",
    ]
    if load:
        lines.append(f"- Load average when the facts were taken: {', '.join(f'{x:.2f}' for x in load)}")
    if "read_bandwidth_gbs" in facts:
        lines.append(f"- Read bandwidth (torch.ones(128M).sum(), 2 threads, best of 5): "
                     f"{facts['read_bandwidth_gbs']:.1f} GB/s")
    return "\n".join(lines)


# ---------------------------------------------------------------- child processes
@dataclass
class ChildResult:
    argv: list[str]
    returncode: int
    wall_s: float
    peak_rss_bytes: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail(self, n: int = 15) -> str:
        """The last `n` lines of stderr (or stdout), to quote in an error."""
        text = self.stderr.strip() or self.stdout.strip()
        return "\n".join(text.splitlines()[-n:])


# The measured command runs under this shim, which is exec'ed first and forks the command from its own small process.
# On Linux a child's ru_maxrss counts what its address space held before exec, i.e. the parent's resident set at
# fork (all of it, with vfork): from a benchmark or test process that has already held a model, every child would
# "peak" at the parent's size. The shim's own RSS is a few MB, so the command's figure is its own.
_RSS_SHIM = r"""
import os, signal, sys
out, argv = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        sys.stderr.write(f"cannot run {argv[0]}: {e}\n")
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(out, "w") as f:
    f.write(str(usage.ru_maxrss * 1024))
if os.WIFSIGNALED(status):
    signal.signal(os.WTERMSIG(status), signal.SIG_DFL)
    os.kill(os.getpid(), os.WTERMSIG(status))
os._exit(os.waitstatus_to_exitcode(status))
"""


def run_child(argv: Sequence[str | os.PathLike], *, timeout: float | None = None, env: Mapping[str, str] | None = None,
              cwd: str | os.PathLike | None = None, log: str | os.PathLike | None = None,
              nice: int = 0) -> ChildResult:
    """Run `argv`, wait for it and measure its wall time and peak RSS (ru_maxrss of wait4, in bytes, taken by a
    small shim process that forks the command, so the caller's own size does not leak into the figure).

    Output goes to temporary files (no pipe dead-lock), or is appended to `log` when given (then `stdout` holds the
    log's new text). `nice` > 0 runs it under `nice -n`. On timeout the child's process group is killed and the
    return code is -9.
    """
    argv = [str(a) for a in argv]
    if nice > 0:
        argv = ["nice", "-n", str(nice), *argv]
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(tempfile.TemporaryFile("w+"))
        err = stack.enter_context(tempfile.TemporaryFile("w+"))
        start_pos = 0
        if log is not None:
            Path(log).parent.mkdir(parents=True, exist_ok=True)
            out = stack.enter_context(open(log, "a+"))
            out.write(f"\n$ {' '.join(argv)}\n")
            out.flush()
            start_pos = out.tell()
            err = subprocess.STDOUT
        rss_file = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "maxrss"
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", _RSS_SHIM, str(rss_file), *argv], stdout=out, stderr=err,
                                env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True)
        rc, rss = _wait(proc, timeout)
        wall = time.perf_counter() - t0
        if rss_file.exists():   # not there when the shim was killed (timeout): the shim's own figure then
            rss = int(rss_file.read_text())
        out.seek(start_pos)
        text = out.read()
        etext = "" if log is not None else (err.seek(0), err.read())[1]
    return ChildResult(argv, rc, wall, rss, text, etext)


def _wait(proc: subprocess.Popen, timeout: float | None) -> tuple[int, int]:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG if deadline else 0)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, int(usage.ru_maxrss) * 1024
        if deadline and time.monotonic() > deadline:
            try:
                os.killpg(proc.pid, 9)
            except ProcessLookupError:
                pass
            pid, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = -9
            return -9, int(usage.ru_maxrss) * 1024
        time.sleep(0.05)


def run_json_child(argv: Sequence[str | os.PathLike], **kwargs: Any) -> tuple[dict[str, Any] | None, ChildResult]:
    """`run_child`, then the last line of stdout that parses as a JSON object (None if none does)."""
    res = run_child(argv, **kwargs)
    for line in reversed(res.stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line), res
            except json.JSONDecodeError:
                continue
    return None, res


# ---------------------------------------------------------------- bandwidth
_BANDWIDTH_CODE = """
import sys, time, torch
torch.set_num_threads(int(sys.argv[1])); n = int(sys.argv[2]); reps = int(sys.argv[3])
x = torch.ones(n); x.sum()
best = min((lambda t0: (x.sum().item(), time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(reps))
print(n * 4 / best / 1e9)
"""


def read_bandwidth_gbs(threads: int = 2, numel: int = 128 * 2**20, repeats: int = 5,
                       python: str | os.PathLike = sys.executable) -> float:
    """Read bandwidth in GB/s: best of `repeats` timings of `torch.ones(numel).sum()` at `threads` threads."""
    res = run_child([python, "-c", _BANDWIDTH_CODE, str(threads), str(numel), str(repeats)], timeout=300)
    if not res.ok:
        raise RuntimeError(f"bandwidth probe failed: {res.tail()}")
    return float(res.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- model shape & sizes
@dataclass(frozen=True)
class ModelShape:
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool
    qkv_bias: bool = False

    @classmethod
    def from_config(cls, cfg: Any) -> ModelShape:
        """From an edgekit ModelConfig, a HF config.json dict, or a path to config.json / its folder."""
        if isinstance(cfg, (str, os.PathLike)):
            p = Path(cfg)
            cfg = json.loads((p / "config.json" if p.is_dir() else p).read_text())
        if isinstance(cfg, Mapping):
            heads = int(cfg["num_attention_heads"])
            return cls(vocab=int(cfg["vocab_size"]), hidden=int(cfg["hidden_size"]),
                       intermediate=int(cfg["intermediate_size"]), layers=int(cfg["num_hidden_layers"]), heads=heads,
                       kv_heads=int(cfg.get("num_key_value_heads") or heads),
                       head_dim=int(cfg.get("head_dim") or int(cfg["hidden_size"]) // heads),
                       tied=bool(cfg.get("tie_word_embeddings", False)),
                       qkv_bias=cfg.get("model_type") == "qwen2" or bool(cfg.get("attention_bias", False)))
        return cls(vocab=cfg.vocab_size, hidden=cfg.hidden_size, intermediate=cfg.intermediate_size,
                   layers=cfg.num_layers, heads=cfg.num_heads, kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim,
                   tied=cfg.tie_word_embeddings, qkv_bias=cfg.attention_bias)

    @property
    def linear_params(self) -> int:
        """Weights of the per-layer linears (q, k, v, o, gate, up, down), all layers."""
        h, q, kv = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim
        return self.layers * (h * q + 2 * h * kv + q * h + 3 * h * self.intermediate)

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def small_params(self) -> int:
        """Norms and biases (kept in float by every scheme)."""
        bias = (self.heads + 2 * self.kv_heads) * self.head_dim if self.qkv_bias else 0
        return self.layers * (2 * self.hidden + bias) + self.hidden


@dataclass(frozen=True)
class QuantLayout:
    """How an artifact stores its weights. Bits per weight = bits + 8*scale_bytes/group (+ zero point bits/group).

    `group` 0 means one scale per output row (per-channel); `embedding_bits` None means float (`float_bytes`);
    `lm_head_bits` None means the lm_head is the (tied) embedding table itself, or a float copy when untied.
    """

    name: str
    linear_bits: float = 32
    group: int = 0
    scale_bytes: float = 0
    zero_bits: float = 0
    embedding_bits: float | None = None
    embedding_group: int = 0
    lm_head_bits: float | None = None
    lm_head_group: int = 32
    float_bytes: float = 4
    kv_bytes: float = 4
    notes: str = field(default="", compare=False)

    def _bpw(self, bits: float | None, group: int, rows_len: int) -> float:
        if bits is None:
            return 8 * self.float_bytes
        if bits >= 16:
            return bits
        per = group or rows_len
        return bits + (8 * self.scale_bytes + self.zero_bits) / per

    def linear_bytes(self, shape: ModelShape) -> float:
        return shape.linear_params * self._bpw(self.linear_bits, self.group, shape.hidden) / 8

    def embedding_bytes(self, shape: ModelShape) -> float:
        return shape.embedding_params * self._bpw(self.embedding_bits, self.embedding_group, shape.hidden) / 8

    def lm_head_bytes(self, shape: ModelShape) -> float:
        if self.lm_head_bits is None:
            return self.embedding_bytes(shape)
        return shape.embedding_params * self._bpw(self.lm_head_bits, self.lm_head_group, shape.hidden) / 8


LAYOUTS: dict[str, QuantLayout] = {
    "fp32": QuantLayout("fp32"),
    "fp16": QuantLayout("fp16", linear_bits=16, float_bytes=2, kv_bytes=2),
    # optimum-executorch --qlinear 8da4w --qlinear_group_size 32 --qembedding 8w: int4 + a 16-bit scale per group of
    # 32 for every linear and a separate int4 lm_head; 8w embedding: int8 + one scale per row.
    "8da4w-g32+emb8": QuantLayout("8da4w-g32+emb8", linear_bits=4, group=32, scale_bytes=2, embedding_bits=8,
                                  embedding_group=0, lm_head_bits=4, lm_head_group=32, kv_bytes=4),
    # edgekit executorch 8da4w group 128 (bf16 scales in XNNPACK) with an 8-bit per-row or 4-bit group-32 embedding
    "8da4w-g128+emb8": QuantLayout("8da4w-g128+emb8", linear_bits=4, group=128, scale_bytes=2, embedding_bits=8,
                                   embedding_group=0, lm_head_bits=4, lm_head_group=128, kv_bytes=4),
    "8da4w-g128+emb4": QuantLayout("8da4w-g128+emb4", linear_bits=4, group=128, scale_bytes=2, embedding_bits=4,
                                   embedding_group=32, lm_head_bits=4, lm_head_group=128, kv_bytes=4),
    # the same where 128 does not divide the widths (SmolLM2-135M: 576 = 64 x 9)
    "8da4w-g64+emb4": QuantLayout("8da4w-g64+emb4", linear_bits=4, group=64, scale_bytes=2, embedding_bits=4,
                                  embedding_group=32, lm_head_bits=4, lm_head_group=64, kv_bytes=4),
    # onnxruntime-genai builder -p int4 -e cpu: MatMulNBits int4 block 32, fp32 scales, 4-bit zero points; the tied
    # embedding is the same int4 table (GatherBlockQuantized), read whole as the lm_head.
    "int4-g32": QuantLayout("int4-g32", linear_bits=4, group=32, scale_bytes=4, zero_bits=4, embedding_bits=4,
                            embedding_group=32, lm_head_bits=None, float_bytes=4, kv_bytes=4),
    # edgekit onnx int4 (bench_onnx.export_for_benchmark): MatMulNBits int4, fp32 scales, symmetric (no zero points);
    # the tied embedding is the same int4 table as the lm_head (GatherBlockQuantized). Block 128 is the default.
    **{f"edgekit-onnx-int4-g{b}": QuantLayout(f"edgekit-onnx-int4-g{b}", linear_bits=4, group=b, scale_bytes=4,
                                              embedding_bits=4, embedding_group=b, lm_head_bits=None, float_bytes=4,
                                              kv_bytes=4) for b in (32, 64, 128)},
    # edgekit onnx int4 with linear_kernel 'edgekit': the same codes in edgekit's 16-row tiles, bf16 scales per block;
    # the tied embedding (GatherQ4) reads the lm_head's table (the fp32 row sums, 4 bytes per row, are not counted).
    **{f"edgekit-onnx-int4-tiled-g{b}": QuantLayout(f"edgekit-onnx-int4-tiled-g{b}", linear_bits=4, group=b,
                                                    scale_bytes=2, embedding_bits=4, embedding_group=b,
                                                    lm_head_bits=None, float_bytes=4, kv_bytes=4)
       for b in (32, 64, 128)},
    # llama.cpp Q4_0 (4 bits + fp16 scale per 32); its output/tied embedding is stored as Q8_0 (8 bits + fp16 / 32).
    "q4_0": QuantLayout("q4_0", linear_bits=4, group=32, scale_bytes=2, embedding_bits=8, embedding_group=32,
                        lm_head_bits=None, float_bytes=4, kv_bytes=2),
    # llama.cpp Q4_1 (4 bits + fp16 scale + fp16 min per 32) throughout.
    "q4_1": QuantLayout("q4_1", linear_bits=4, group=32, scale_bytes=4, embedding_bits=4, embedding_group=32,
                        lm_head_bits=None, float_bytes=4, kv_bytes=2),
    # The nominal minimums an artifact's size is compared with: every weight matrix (tied embedding stored once) at the
    # scheme's bits with one fp16 scale per group of 32 (4-bit) or per row (8-bit), norms in fp16.
    "min-w4-g32": QuantLayout("min-w4-g32", linear_bits=4, group=32, scale_bytes=2, embedding_bits=4,
                              embedding_group=32, float_bytes=2, kv_bytes=2),
    "min-w8": QuantLayout("min-w8", linear_bits=8, group=0, scale_bytes=2, embedding_bits=8, float_bytes=2,
                          kv_bytes=2),
}

# nominal minimum layout per quantization name (edgekit's names and the peers')
NOMINAL = {"8da4w": "min-w4-g32", "int4": "min-w4-g32", "w4": "min-w4-g32", "q4_0": "min-w4-g32",
           "q4_1": "min-w4-g32", "w8": "min-w8", "8da8w": "min-w8", "int8": "min-w8", "fp16": "fp16", "fp32": "fp32"}


def theoretical_size_bytes(shape: ModelShape, layout: QuantLayout) -> int:
    """Smallest artifact the weights fit in under `layout`: linears + embedding (+ a separate lm_head when the layout
    stores one at other bits or the model is untied) + norms/biases in float."""
    total = layout.linear_bytes(shape) + layout.embedding_bytes(shape) + shape.small_params * layout.float_bytes
    if layout.lm_head_bits is not None or not shape.tied:
        total += layout.lm_head_bytes(shape)
    return int(total)


def decode_bytes_per_token(shape: ModelShape, layout: QuantLayout, context: int) -> int:
    """Bytes read by one decode step at `context` cached positions: all linears, the lm_head, one embedding row,
    norms/biases, and K+V of `context` positions for every layer."""
    row = layout.embedding_bytes(shape) / shape.vocab
    kv = 2 * shape.layers * context * shape.kv_heads * shape.head_dim * layout.kv_bytes
    return int(layout.linear_bytes(shape) + layout.lm_head_bytes(shape) + row
               + shape.small_params * layout.float_bytes + kv)


def roofline_fraction(decode_tok_s: float, bytes_per_token: float, bandwidth_gbs: float) -> float:
    """decode tok/s ÷ the bandwidth limit (bandwidth ÷ bytes per token)."""
    return decode_tok_s / (bandwidth_gbs * GB / bytes_per_token)


# ---------------------------------------------------------------- files
def path_bytes(path: str | os.PathLike) -> int:
    """Size of a file, or the total of every file under a folder."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def tree_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 over the relative names and contents of every file under `path` (or of one file)."""
    p = Path(path)
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(p) if f != p else f.name).encode())
        with open(f, "rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
    return h.hexdigest()


def human_bytes(n: float | None) -> str:
    """'415 MB' style (decimal units)."""
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB", "MB") else f"{n:.2f} GB"
        n /= 1000
    return f"{n:.2f} GB"
