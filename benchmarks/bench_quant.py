"""Quantization-stage benchmark: GGUF block decoding speed against gguf.quants' reference (Qwen2.5-1.5B's embedding
shape, 151936 x 1536, random valid blocks), SmolLM2-135M load time, and the per-group scale search against
round-to-nearest on every SmolLM2 linear (squared error and time).
Usage: nice -n 10 python benchmarks/bench_quant.py [--rows 151936] [--threads 2]
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results" / "quant.md"
sys.path.insert(0, str(Path(__file__).parent.parent / "tests" / "core"))


def bench_decode(rows: int, cols: int) -> list[str]:
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize
    from quant_blocks import random_blocks

    from edgekit.model.gguf_blocks import decode_gguf_blocks

    out = [(f"| type | {rows} x {cols} decode to codes/scales (s) | dequantize() (s) | gguf.quants.dequantize (s) "
           "| equal |"), "|---|---|---|---|---|"]
    rng = np.random.default_rng(0)
    for name in ("Q8_0", "Q4_K", "Q6_K", "Q4_1"):
        raw = random_blocks(name, rows, cols, rng)
        t0 = time.perf_counter()
        qt = decode_gguf_blocks(raw, name, cols)
        t1 = time.perf_counter()
        w = qt.dequantize()
        t2 = time.perf_counter()
        ref = dequantize(raw, GGMLQuantizationType[name])
        t3 = time.perf_counter()
        out.append(f"| {name} | {t1 - t0:.2f} | {t2 - t1:.2f} | {t3 - t2:.2f} | {torch.equal(w, torch.from_numpy(ref))} |")
        print(out[-1], flush=True)
        del raw, qt, w, ref
    return out


def bench_search() -> list[str]:
    import edgekit
    from edgekit.quant import quantize_tensor

    t0 = time.perf_counter()
    model = edgekit.load("smollm2-135m")
    load_s = time.perf_counter() - t0
    out = [(f"SmolLM2-135M `edgekit.load` (decodes every Q4_1/Q8_0 tensor into `source_quant`, weights from them): "
           f"{load_s:.1f} s"), "", ("| grid (all SmolLM2 linears) | RTN sq. error | search sq. error | ratio | "
           "RTN s | search s |"), "|---|---|---|---|---|---|"]
    linears = [n for n in model.source_quant if n != "tok_embeddings.weight"]
    for symmetric, group in ((True, 64), (True, 32), (False, 64)):
        totals, times = [0.0, 0.0], [0.0, 0.0]
        for name in linears:
            w = model.weights[name]
            for i, search in enumerate((False, True)):
                t = time.perf_counter()
                qt = quantize_tensor(w, 4, group, symmetric, search)
                times[i] += time.perf_counter() - t
                totals[i] += ((qt.dequantize() - w) ** 2).sum().item()
        label = f"4-bit {'symmetric' if symmetric else 'with minimum'} g{group}"
        out.append(f"| {label} | {totals[0]:.1f} | {totals[1]:.1f} | {totals[1] / totals[0]:.3f} | {times[0]:.1f} "
                   f"| {times[1]:.1f} |")
        print(out[-1], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=151936)
    ap.add_argument("--cols", type=int, default=1536)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lines = ["# Quantization stage", "", (f"`python benchmarks/bench_quant.py --rows {args.rows} --threads "
             f"{args.threads}` on {platform.processor() or platform.machine()}, torch threads {args.threads} "
             "(shared machine: times are noisy)"), "", "## GGUF block decoding", ""]
    lines += bench_decode(args.rows, args.cols)
    lines += ["", "## Scale search vs round-to-nearest", ""]
    lines += bench_search()
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
