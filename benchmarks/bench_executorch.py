"""ExecuTorch target benchmark on the Qwen2.5-0.5B-shaped random checkpoint.

Exports 8da4w (group 32) + 8-bit embedding, max_seq_len 512, in a child process (export wall time, peak RSS), then
measures prefill / decode tok/s with the peers' method (/work/shared/peers/et_bench.py: 64-token prompt, 64 decoded,
best of 3 after a warm-up, 2 threads) and the decode bandwidth roofline. Writes benchmarks/results/executorch.md.

    nice -n 10 python benchmarks/bench_executorch.py [--skip-export] [--validate]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("bench_executorch")
ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache"
CHECKPOINT = CACHE / "qwen05b"
ARTIFACT = CACHE / "executorch-qwen05b-8da4w"
PEERS = Path("/work/shared/peers")
PROMPT, DECODE, THREADS = 64, 64, 2
PEER_FIGURES = {"name": "optimum-executorch 1.1.0 (peers/README.md, 2026-11-26)", "prefill_tok_s": "332-345",
                "decode_tok_s": "79-86", "pte_mb": 415, "export_wall_s": 25 * 60, "export_peak_rss_gb": 4.8}

EXPORT_CHILD = """
import json, sys, time
t0 = time.perf_counter()
import edgekit
art = edgekit.export(sys.argv[1], "android", quant="8da4w", max_seq_len=512, last_logits_only=True, out=sys.argv[2],
                     force=True, validate=sys.argv[3] == "1", show_progress=False, group_size=32, embedding_bits=8)
print(json.dumps({"wall_s": time.perf_counter() - t0, "stages": art.metadata.get("stage_seconds"),
                  "validation": art.metadata.get("validation")}))
"""

BANDWIDTH_CHILD = """
import json, time, torch
torch.set_num_threads(2)
x = torch.ones(128 * 1024 * 1024)
x.sum()
best = min((lambda t0: (x.sum(), time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(10))
print(json.dumps({"read_gb_s": x.numel() * 4 / best / 1e9}))
"""


def ensure_checkpoint() -> Path:
    if not (CHECKPOINT / "config.json").exists():
        subprocess.run([sys.executable, str(PEERS / "make_random_checkpoint.py"), str(CHECKPOINT), "0.5b"], check=True)
    return CHECKPOINT


def _child_json(code: str, *args: str) -> tuple[dict[str, Any], float]:
    """Runs python code in a child; returns its last JSON line (plus its CPU seconds) and its peak RSS in GB."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    before, cpu_before = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_kb = usage.ru_maxrss
    if peak_kb <= before:  # ru_maxrss of children is the max over all children so far
        log.warning("peak RSS of this child is not above an earlier child's; reporting the running max")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["cpu_s"] = round(usage.ru_utime + usage.ru_stime - cpu_before, 1)  # honest on a shared, busy machine
    return res, peak_kb / 1024 / 1024


def export(validate: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    res, peak_gb = _child_json(EXPORT_CHILD, str(ensure_checkpoint()), str(ARTIFACT), "1" if validate else "0")
    res.update(export_wall_s=round(time.perf_counter() - t0, 1), export_peak_rss_gb=round(peak_gb, 2),
               export_cpu_s=res.pop("cpu_s"))
    return res


def speed(pte: Path) -> dict[str, Any]:
    """The peers' et_bench.py run on our .pte (same inputs: tokens[1,T], cache positions[T])."""
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS))
    out = subprocess.run([sys.executable, str(PEERS / "et_bench.py"), str(pte), str(PROMPT), str(DECODE)],
                         capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-4000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def bytes_per_token(meta: dict[str, Any], pte_bytes: int, position: int) -> int:
    """Weights a decode step reads (the .pte minus the embedding table, of which it reads one row) + its KV cache."""
    m = meta["model"]
    cfg = json.loads((CHECKPOINT / "config.json").read_text())
    hidden, vocab, layers = cfg["hidden_size"], m["vocab_size"], cfg["num_hidden_layers"]
    head_dim = hidden // cfg["num_attention_heads"]
    embedding = vocab * hidden * 1 + vocab * 4  # 8-bit rows + one fp32 scale per row
    kv = 2 * layers * position * cfg["num_key_value_heads"] * head_dim * 4
    return pte_bytes - embedding + hidden + kv


def run(skip_export: bool = False, validate: bool = False) -> dict[str, Any]:
    """Everything; returns the figures as a dict (and writes results/executorch.md)."""
    result: dict[str, Any] = {"checkpoint": str(ensure_checkpoint())}
    if not skip_export or not (ARTIFACT / "model.pte").exists():
        result.update(export(validate))
    meta = json.loads((ARTIFACT / "artifact.json").read_text())["metadata"]
    pte = ARTIFACT / "model.pte"
    result["pte_mb"] = round(pte.stat().st_size / 1e6, 1)
    result.update(speed(pte))
    bw, _ = _child_json(BANDWIDTH_CHILD)
    result["read_gb_s"] = round(bw["read_gb_s"], 1)
    per_token = bytes_per_token(meta, pte.stat().st_size, PROMPT + DECODE // 2)
    result["bytes_per_token_mb"] = round(per_token / 1e6, 1)
    result["roofline_decode_tok_s"] = round(bw["read_gb_s"] * 1e9 / per_token, 1)
    result["roofline_fraction"] = round(result["decode_tok_s"] / result["roofline_decode_tok_s"], 3)
    result["delegation"] = {k: meta["delegation"][k] for k in ("delegated_subgraphs", "delegated_nodes",
                                                               "non_delegated_nodes", "undelegated_linears")}
    write_markdown(result)
    return result


def write_markdown(r: dict[str, Any]) -> Path:
    p = PEER_FIGURES
    lines = [
        "# ExecuTorch target (edgekit) on the Qwen2.5-0.5B-shaped random checkpoint",
        "",
        (f"8da4w, group 32, 8-bit embedding, 4-bit output layer, max_seq_len 512, last-position logits; "
        f"{PROMPT}-token prompt, {DECODE} decoded, {THREADS} threads, best of 3 after a warm-up "
        "(/work/shared/peers/et_bench.py). Command: `nice -n 10 python benchmarks/bench_executorch.py`."),
        "",
        "| | prefill tok/s | decode tok/s | .pte MB | export wall | export peak RSS |",
        "|---|---|---|---|---|---|",
        (f"| edgekit executorch | {r['prefill_tok_s']} | {r['decode_tok_s']} | {r['pte_mb']} | "
        f"{r.get('export_wall_s', '-')} s | {r.get('export_peak_rss_gb', '-')} GB |"),
        (f"| {p['name']} | {p['prefill_tok_s']} | {p['decode_tok_s']} | {p['pte_mb']} | {p['export_wall_s']} s | "
        f"{p['export_peak_rss_gb']} GB |"),
        "",
        "The peer figures are copied from peers/README.md (another run); compare only side-by-side runs.",
        "",
        (f"Roofline: read bandwidth {r['read_gb_s']} GB/s (torch.ones(128M).sum(), 2 threads); a decode step reads "
        f"{r['bytes_per_token_mb']} MB (weights without the embedding table, plus the KV cache at position "
        f"{PROMPT + DECODE // 2}), so at most {r['roofline_decode_tok_s']} tok/s; measured decode is "
        f"{r['roofline_fraction']:.0%} of that."),
        "",
        f"Export stages (s): {json.dumps(r.get('stages'))}",
        f"Delegation: {json.dumps(r['delegation'])}",
        "",
        "```json",
        json.dumps(r, indent=1, default=str),
        "```",
    ]
    out = ROOT / "results" / "executorch.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-export", action="store_true", help="reuse the artifact in benchmarks/.cache if present")
    ap.add_argument("--validate", action="store_true", help="validate the export (adds its time to the export)")
    args = ap.parse_args()
    print(json.dumps(run(args.skip_export, args.validate), indent=1, default=str))


if __name__ == "__main__":
    main()
