"""Quantizers side by side: SmolLM2-135M as float weights (the GGUF's dequantized values, no grid kept) exported to
ONNX int4 (block 128 by default, symmetric, XNNPACK's stock layout) with quantizer rtn / search / gptq, then
edgekit.evaluate on the shipped eval text (mean KL, same top, perplexity, in ONNX Runtime).

    python benchmarks/bench_calib.py LEVELS QUANTIZERS [BLOCK] [output]
    e.g. python benchmarks/bench_calib.py 1,4 rtn,search,gptq 128

Prints one JSON line per export (numbers go into benchmarks/results/calib.md by hand)."""
from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
import time

import edgekit


def main() -> None:
    levels = [int(a) for a in sys.argv[1].split(",")]
    quantizers = sys.argv[2].split(",")
    block = int(sys.argv[3]) if len(sys.argv) > 3 else 128
    head = len(sys.argv) > 4 and sys.argv[4] == "output"
    model = dataclasses.replace(edgekit.load("smollm2-135m"), source_quant={})
    out = tempfile.mkdtemp(prefix="bench-calib-")
    for level in levels:
        for qz in quantizers:
            t0 = time.time()
            extra = {"quantizer_output": True} if head and qz != "rtn" else {}
            art = edgekit.export(model, "onnx", quant="int4", block_size=block, accuracy_level=level, quantizer=qz,
                                 max_seq_len=256, out=f"{out}/{qz}-L{level}-b{block}", force=True,
                                 show_progress=False, evaluate=False, **extra)
            seconds = time.time() - t0
            r = edgekit.evaluate(art, reference=model, show_progress=False)
            print(json.dumps({"quantizer": qz, "output_too": bool(extra), "accuracy_level": level, "block": block,
                              "export_s": round(seconds, 1), "mean_kl": round(r.mean_kl, 4),
                              "same_top": round(r.same_top, 4), "perplexity": round(r.perplexity, 3),
                              "reference_perplexity": round(r.reference_perplexity, 3), "tokens": r.tokens,
                              "calibration": art.metadata.get("quantizer", {}).get("calibration")}),
                  flush=True)


if __name__ == "__main__":
    main()
