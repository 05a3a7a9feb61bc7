"""Quality beside size and speed: the embedded SmolLM2-135M GGUF through each target's schemes, and the peers.

    python benchmarks/bench_quality.py [--rows onnx,executorch,coreml,llama-cpp,optimum-executorch,onnxruntime-genai]
                                       [--max-tokens N] [--rounds 3] [--reuse]

Every row is measured the same way: teacher-forced over the text that ships with edgekit (edgekit/evaldata, 5,362
SmolLM2 tokens of prose and worked problems) in windows of 256 tokens, in the artifact's own runtime, against the eager
fp32 graph of the same GGUF (edgekit.quality: mean KL(fp32 || artifact) per token, share of tokens with the same top
token, both perplexities). Decode speed: 64-token prefill then 32 greedy steps, the rows interleaved round after round
in one process (the machine's bandwidth drifts by tens of percent within minutes; only figures of one run compare).
llama.cpp runs in its peer venv (benchmarks/peers/tools.py) behind benchmarks/peers/lcpp_logits.py: the package's
Q4_1 file as it is, and requantized by llama.cpp itself to Q4_0 and Q4_K_M. optimum-executorch (8da4w group 32,
8-bit embedding) and onnxruntime-genai's builder (int4) export an HF folder of the GGUF's exact weights
(benchmarks/peers/hf_folder.py, checked against edgekit's eager graph) and run in their own runtimes behind
benchmarks/peers/peer_logits.py. The ONNX row "int4 block 128, GPTQ (float weights)" exports the GGUF's values as
plain float weights (no grid kept, as from such an HF folder) with quantizer gptq, as benchmarks/bench_calib.py does.
Writes benchmarks/results/quality.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR / "peers"))
import common

log = logging.getLogger("bench_quality")
WORK = BENCH_DIR / ".cache" / "quality"
RESULTS = BENCH_DIR / "results" / "quality.md"
WINDOW = 256
THREADS = 2


@dataclass
class Row:
    label: str
    target: str                  # edgekit target name, or "llama-cpp"
    quant: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    session: Any = None
    bench_argv: list[str] | None = None   # a peer's own speed script (prints JSON with decode_tok_s)
    # export from the GGUF's values as plain float weights (source_quant={}: no grid kept), as from an HF folder of
    # the same weights; the eager fp32 reference is the same graph either way
    float_weights: bool = False


def edgekit_rows(targets: set[str]) -> list[Row]:
    rows = []
    if "onnx" in targets:
        rows += [Row("int4 default (block 128, level 4)", "onnx", "int4", note="the target's default before"),
                 Row("int4 as the demo exported it", "onnx", "int4",
                     {"block_size": 32, "output_bits": 8, "linear_kernel": "edgekit"}, "block 32, 8-bit output"),
                 Row("source, stock MatMulNBits (level 4)", "onnx", "source", note="the file's grids, ORT's ops"),
                 Row("source, stock, float activations (level 1)", "onnx", "source", {"accuracy_level": 1}),
                 Row("source + edgekit LinearQ4 (default, demo)", "onnx", "source", {"linear_kernel": "edgekit"},
                     "the file's Q4_1 grids with fp16 d/m, int8 activations per 32"),
                 Row("int4 block 128, GPTQ (float weights)", "onnx", "int4",
                     {"block_size": 128, "accuracy_level": 1, "quantizer": "gptq", "quantizer_output": True},
                     "symmetric g128 (XNNPACK's layout) from float weights, GPTQ on the shipped calibration text, "
                     "output layer too (benchmarks/bench_calib.py's goal run)", float_weights=True)]
    if "executorch" in targets:
        rows += [Row("8da4w default", "executorch", "8da4w"),
                 Row("8da4w as the demo exports it", "executorch", "8da4w",
                     {"output_bits": 8, "linear_kernel": "edgekit"}, "8-bit output layer, edgekit kernel")]
        from edgekit.targets.registry import get_target

        if "source" in get_target("executorch").capabilities.quant_schemes:
            rows.append(Row("source + edgekit kernel", "executorch", "source", {"linear_kernel": "edgekit"}))
    if "coreml" in targets:
        rows.append(Row("w4 (Core ML evaluator on Linux)", "coreml", "w4"))
        rows.append(Row("source (Core ML evaluator on Linux)", "coreml", "source",
                        note="the file's grids: int4 / int8 codes, fp16 d, Q4_1 minimum as a per-group correction"))
    return rows


def export_row(model, row: Row, reuse: bool, window: int = WINDOW) -> None:
    import dataclasses

    import edgekit
    from edgekit.targets.base import Artifact
    from edgekit.targets.registry import get_target

    src = dataclasses.replace(model, source_quant={}) if row.float_weights else model
    out = WORK / "exports" / row.label.replace(" ", "_").replace("/", "-")
    stamp = out.with_name(out.name + ".code-sha256")   # beside the folder: its bytes stay the artifact's
    t0 = time.perf_counter()
    if reuse and (out / "artifact.json").exists() and stamp.exists() and stamp.read_text() == code_stamp():
        art = Artifact.load(out)
    else:
        art = edgekit.export(src, row.target, quant=row.quant, max_seq_len=window, last_logits_only=False,
                             out=out, force=True, validate=False, evaluate=False, show_progress=False, **row.options)
        row.figures["export_s"] = time.perf_counter() - t0
        stamp.write_text(code_stamp())
    row.figures["bytes"] = sum(f.stat().st_size for f in Path(art.path).rglob("*") if f.is_file())
    row.session = get_target(row.target).session(art)


def code_stamp() -> str:
    """sha256 of edgekit's and the targets' sources: --reuse keeps an export only if the code that made it is today's
    (a process loads one build of a kernel library: an export kept from another checkout would be refused beside a
    fresh one, and its figures would be another code's)."""
    import hashlib

    h = hashlib.sha256()
    root = BENCH_DIR.parent
    for f in sorted(p for d in ("edgekit", "targets") for p in (root / d).rglob("*")
                    if p.is_file() and p.suffix in (".py", ".h", ".hpp", ".cpp", ".c", ".txt", ".json")):
        h.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


class PeerSession:
    """The Session contract over a peer's logits server in the peer's venv (lcpp_logits.py, peer_logits.py: full
    logits of every fed position)."""

    last_logits_only = False

    def __init__(self, argv: list[str]):
        self.max_seq_len = WINDOW
        self.proc = subprocess.Popen([str(a) for a in argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.tmp = tempfile.mkdtemp(prefix="peer-logits-")

    def ask(self, req: dict[str, Any]) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the logits server {self.proc.args[1]} exited ({self.proc.wait()})")
        ans = json.loads(line)
        if not ans.get("ok"):
            raise RuntimeError(f"{Path(self.proc.args[1]).name}: {ans.get('error')}")
        return ans

    def reset(self) -> None:
        self.ask({"op": "reset"})

    def forward(self, tokens: np.ndarray, input_pos: np.ndarray) -> np.ndarray:
        out = os.path.join(self.tmp, "logits.npy")
        self.ask({"op": "forward", "tokens": [int(t) for t in np.asarray(tokens)[0]], "out": out})
        return np.load(out)[None]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def lcpp_session(python: Path, gguf: Path, window: int = WINDOW) -> PeerSession:
    session = PeerSession([python, BENCH_DIR / "peers" / "lcpp_logits.py", gguf, window, THREADS])
    session.max_seq_len = window
    return session


def llama_cpp_rows(gguf: Path) -> list[Row]:
    import tools

    py = tools.PEERS["llama-cpp"].python()
    rows = [Row("llama.cpp: the package's Q4_1 file as it is", "llama-cpp", "Q4_1", note=str(gguf.name))]
    rows[0].session = lcpp_session(py, gguf)
    rows[0].figures["bytes"] = gguf.stat().st_size
    for ftype in ("Q4_0", "Q4_K_M"):
        dst = WORK / "lcpp" / f"smollm2-{ftype}.gguf"
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            rows[0].session.ask({"op": "quantize", "src": str(gguf), "dst": str(dst), "ftype": ftype})
        row = Row(f"llama.cpp: requantized to {ftype}", "llama-cpp", ftype, note="llama_model_quantize")
        row.session, row.figures["bytes"] = lcpp_session(py, dst), dst.stat().st_size
        rows.append(row)
    return rows


HF_FOLDER = WORK / "smollm2-hf"


def hf_folder(model) -> Path:
    """SmolLM2's HF folder with the GGUF's exact weights (peers/hf_folder.py), written once and checked."""
    import hf_folder as hf

    if not (HF_FOLDER / "model.safetensors").exists():
        tmp = HF_FOLDER.with_name(HF_FOLDER.name + ".tmp")
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        hf.write_folder(model, tmp)
        hf.check_folder(model, tmp, model.tokenizer.encode("The capital of France is Paris, and 12 * 7 = 84."))
        tmp.rename(HF_FOLDER)
    return HF_FOLDER


def hf_peer_rows(model, wanted: set[str]) -> list[Row]:
    """optimum-executorch (8da4w group 32, 8-bit embedding) and onnxruntime-genai's builder (int4), each exported by
    the peer from the same weights as an HF folder and run in the peer's own runtime."""
    import hashlib

    import tools

    folder = hf_folder(model)
    sha = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    rows = []
    for name, kind, main in (("optimum-executorch", "et", None), ("onnxruntime-genai", "ort", "model.onnx")):
        if name not in wanted:
            continue
        peer = tools.PEERS[name]
        art = peer.export(folder, sha)
        path = Path(art.path) / main if main else Path(art.path)
        row = Row(f"{name}: {art.layout}", name, art.layout, note="the peer's own export of the HF folder")
        row.figures["command"] = art.command
        row.session = PeerSession([peer.python(), BENCH_DIR / "peers" / "peer_logits.py", kind, path, THREADS])
        row.figures["bytes"] = art.size_bytes
        row.bench_argv = [str(a) for a in peer.bench_argv(art, 64, 32, THREADS, 1)]
        rows.append(row)
    return rows


def evaluate_row(model, row: Row, max_tokens: int | None, window: int = WINDOW,
                 reference: str = "SmolLM2-135M GGUF, eager fp32") -> None:
    from edgekit.evaldata import eval_text
    from edgekit.quality.evaluate import run

    txt = eval_text()
    tokens = model.tokenizer.encode(txt.text)
    labels = {"runtime": row.target, "target": row.target, "quant": row.quant, "text_id": txt.id,
              "text_sha256": txt.sha256, "reference": reference}
    rep = run(row.session, model, tokens, model.tokenizer, window=window, labels=labels, max_tokens=max_tokens,
              worst=1, show_progress=False)
    row.figures.update({"mean_kl": rep.mean_kl, "same_top": rep.same_top, "ppl": rep.perplexity,
                        "ref_ppl": rep.reference_perplexity, "tokens": rep.tokens})
    print(f"{row.label}: KL {rep.mean_kl:.4f}  same top {rep.same_top:.1%}  ppl {rep.perplexity:.2f} "
          f"(fp32 {rep.reference_perplexity:.2f})  {row.figures['bytes'] / 1e6:.0f} MB", flush=True)


def decode_rounds(rows: list[Row], rounds: int, prompt: int = 64, steps: int = 32) -> None:
    """Decode tok/s of every row, interleaved round after round."""
    ids = np.arange(1, prompt + 1, dtype=np.int64)[None]
    for _ in range(rounds):
        for row in rows:
            if row.bench_argv:   # a peer, timed by its own runner in its own venv (the same prompt and steps)
                out = subprocess.run(row.bench_argv, capture_output=True, text=True, check=True).stdout
                row.figures.setdefault("decode", []).append(json.loads(out.strip().splitlines()[-1])["decode_tok_s"])
                continue
            s = row.session
            s.reset()
            s.forward(ids, np.arange(prompt, dtype=np.int64))
            t0 = time.perf_counter()
            for pos in range(prompt, prompt + steps):
                s.forward(np.array([[7]], dtype=np.int64), np.array([pos], dtype=np.int64))
            row.figures.setdefault("decode", []).append(steps / (time.perf_counter() - t0))


def median_decode(figures: dict[str, Any]) -> float | None:
    dec = sorted(figures.get("decode", []))
    return dec[len(dec) // 2] if dec else None


def row_cells(figures: dict[str, Any]) -> tuple[str, str, str, str]:
    """A row's decode (median and range), mean KL (or its error), same-top and perplexity cells."""
    f, dec = figures, sorted(figures.get("decode", []))
    speed = f"{median_decode(f):.0f} ({dec[0]:.0f}-{dec[-1]:.0f})" if dec else "-"
    kl = f"{f['mean_kl']:.4f}" if "mean_kl" in f else f.get("error", "-")
    same = f"{f['same_top']:.1%}" if "same_top" in f else "-"
    ppl = f"{f['ppl']:.2f} ({f['ref_ppl']:.2f})" if "ppl" in f else "-"
    return speed, kl, same, ppl


def write_results(rows: list[Row], facts: dict[str, Any], argv: list[str], out: Path = RESULTS) -> None:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    how = (f"`python benchmarks/bench_quality.py {' '.join(argv)}` on {when}. Reference: the eager fp32 graph of the "
           f"same GGUF. Text: edgekit/evaldata (shipped), windows of {WINDOW} tokens, half of each as context. Decode: "
           f"64-token prefill, 32 greedy steps, {THREADS} threads, rows interleaved per round (median and range).")
    lines = ["# Quality beside size and speed: SmolLM2-135M (the embedded Q4_1 GGUF)", "", how, "",
             "| row | target | bytes | mean KL | same top | perplexity (fp32) | decode tok/s | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = r.figures
        speed, kl, same, ppl = row_cells(f)
        lines.append(f"| {r.label} | {r.target} | {f.get('bytes', 0) / 1e6:.1f} MB | {kl} | {same} | {ppl} | "
                     f"{speed} | {r.note} |")
    commands = [f"- {r.label}: `{r.figures['command']}`" for r in rows if "command" in r.figures]
    if commands:
        lines += ["", "Peer exports:", *commands]
    lines += ["", common.facts_markdown(facts), ""]
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", default="onnx,executorch,coreml,llama-cpp,optimum-executorch,onnxruntime-genai",
                   help="comma list of: onnx, executorch, coreml, llama-cpp, optimum-executorch, "
                   "onnxruntime-genai")
    p.add_argument("--max-tokens", type=int, default=None, help="score at most this many tokens per row")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reuse", action="store_true", 
                   help="reuse exports in benchmarks/.cache/quality made by the same edgekit sources")
    p.add_argument("--out", type=Path, default=None,
                   help=f"results file (default: {RESULTS.relative_to(BENCH_DIR.parent)} for a run of every row, "
                   "else results/quality-<rows>.md, so a partial run never replaces the full table)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    import edgekit
    from edgekit.model.load import resolve_builtin

    torch.set_num_threads(THREADS)
    wanted = set(args.rows.split(","))
    model = edgekit.load("smollm2-135m")
    rows = edgekit_rows(wanted)
    for row in rows:
        print(f"export: {row.label}", flush=True)
        export_row(model, row, args.reuse)
    if "llama-cpp" in wanted:
        try:
            rows += llama_cpp_rows(resolve_builtin("smollm2-135m"))
        except Exception as e:  # noqa: BLE001 - a peer that cannot be installed is reported, not fatal
            print(f"llama.cpp unavailable: {e}", flush=True)
    if wanted & {"optimum-executorch", "onnxruntime-genai"}:
        try:
            rows += hf_peer_rows(model, wanted)
        except Exception as e:  # noqa: BLE001 - a peer that cannot be installed or export is reported, not fatal
            print(f"HF peers unavailable: {type(e).__name__}: {e}", flush=True)
    for row in rows:
        try:
            evaluate_row(model, row, args.max_tokens)
        except Exception as e:  # noqa: BLE001 - one failing row is reported in the table
            row.figures["error"] = f"{type(e).__name__}: {e}"[:120]
            print(f"{row.label}: FAILED {row.figures['error']}", flush=True)
    # peer rows run behind a logits server (a .npy of every position's logits per call), whose speed would be that
    # pipe's: a peer with a speed script of its own (benchmarks/peers/*_bench.py) is timed by it instead
    decode_rounds([r for r in rows if "error" not in r.figures and (r.bench_argv or
                                                                    not isinstance(r.session, PeerSession))],
                  args.rounds)
    every = set(p.get_default("rows").split(","))
    out = args.out or (RESULTS if wanted >= every else RESULTS.with_name(f"quality-{'-'.join(sorted(wanted))}.md"))
    write_results(rows, common.machine_facts(), argv if argv is not None else sys.argv[1:], out)
    for r in rows:
        if isinstance(r.session, PeerSession):
            r.session.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
