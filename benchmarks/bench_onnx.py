"""ONNX target benchmark: Qwen2.5-0.5B-shaped random checkpoint, int4 (block 128 by default, int8 activations), int4
or int8 embedding, the int4 linears run by ORT's MatMulNBits (linear_kernel mlas, the default) and by edgekit's own
kernel library (linear_kernel edgekit), run by the target's standalone session (ONNX Runtime alone).

    python benchmarks/bench_onnx.py [--linear-kernel mlas edgekit] [--block-size 128 32] [--embedding-bits 4 8]
                                    [--runs 3] [--validate]

Export wall time and peak RSS are measured in a child process (benchmarks/common.run_child); speed with the same
child as benchmarks/run.py (peers/edgekit_child.py bench: 64-token prompt, 64 greedy decode steps, 2 threads, best of
3 after a warm-up). Writes benchmarks/results/onnx.md. Importable: `run_benchmark(...) -> dict`; benchmarks/run.py
uses `export_for_benchmark`. The peers are not run here (benchmarks/run.py runs them side by side).
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
import common

log = logging.getLogger("bench_onnx")
CHECKPOINT = BENCH_DIR / ".cache" / "qwen05b"
WORK = BENCH_DIR / ".cache" / "onnx"
RESULTS = BENCH_DIR / "results" / "onnx.md"
KERNELS = ("mlas", "edgekit")
DEFAULT_KERNEL = "edgekit"   # what run.py's edgekit onnx row exports (export_for_benchmark's default)


def export_for_benchmark(checkpoint: Path, out: Path, max_seq_len: int = 512, embedding_bits: int = 4,
                         validate: bool = False, block_size: int | None = 128,
                         linear_kernel: str = DEFAULT_KERNEL) -> dict[str, Any]:
    """The benchmark's export: int4 block `block_size` with int8 activations (MatMulNBits accuracy_level 4, or
    edgekit's kernel with the same arithmetic), int4 lm_head, `embedding_bits` embedding (shared with the lm_head when
    both are int4: the checkpoint is tied). Weights are loaded in their stored dtype: bf16 stays bf16 (no fp32
    copy), a GGUF file's tensors are dequantized to fp32 exactly, never rounded to bf16 before the quantizer sees
    them. validate=False by default, like the peers' exporters; the validated figure is reported separately."""
    from edgekit_onnx.quant import linear_in_features

    import edgekit

    model = edgekit.load(checkpoint, dtype=None)
    if block_size is not None and any(f % block_size for f in linear_in_features(model.config)):
        block_size = None  # SmolLM2: 576 = 64 x 9; the target picks the largest block that divides every width
    blocks = {} if block_size is None else {"block_size": block_size}
    art = edgekit.export(model, "onnx", quant="int4", max_seq_len=max_seq_len, last_logits_only=True, out=out,
                         force=True, validate=validate, show_progress=False, accuracy_level=4,
                         embedding_bits=embedding_bits, output_bits=4, linear_kernel=linear_kernel, **blocks)
    block_size = art.metadata["quantization"]["block_size"]
    tiled = "tiled-" if linear_kernel == "edgekit" else ""
    notes = ("linear_kernel=edgekit: the int4 linears and the embedding run in edgekit's ONNX Runtime kernel library "
             "(edgekit.LinearQ4 / GatherQ4, in the export folder); the MatMulNBits form (the target's default) is "
             "bench_onnx.py's mlas row" if linear_kernel == "edgekit" else "")
    return {"quant": "int4", "options": art.metadata["options"], "validation": art.metadata.get("validation"),
            "layout": f"edgekit-onnx-int4-{tiled}g{block_size}", "notes": notes, "load_dtype": "stored"}


def ensure_checkpoint() -> Path:
    if not (CHECKPOINT / "model.safetensors").exists():
        subprocess.run([sys.executable, "/work/shared/peers/make_random_checkpoint.py", str(CHECKPOINT), "0.5b"],
                       check=True)
    return CHECKPOINT


def _child_export(out: Path, embedding_bits: int, validate: bool, block_size: int, kernel: str
                  ) -> tuple[dict, common.ChildResult]:
    code = (f"import sys, json; sys.path.insert(0, {str(BENCH_DIR)!r}); import bench_onnx as b; "
            f"from pathlib import Path; print(json.dumps(b.export_for_benchmark(Path({str(CHECKPOINT)!r}), "
            f"Path({str(out)!r}), embedding_bits={embedding_bits}, validate={validate!r}, block_size={block_size}, "
            f"linear_kernel={kernel!r}), default=str))")
    info, res = common.run_json_child([sys.executable, "-c", code], nice=10, timeout=3600)
    if info is None:
        raise RuntimeError(f"export failed:\n{res.tail()}")
    return info, res


def _child_bench(folder: Path, runs: int, threads: int = 2) -> dict:
    standalone = Path(__import__("edgekit_onnx").__file__).with_name("standalone_session.py")
    info, res = common.run_json_child([sys.executable, str(BENCH_DIR / "peers" / "edgekit_child.py"), "bench",
                                       str(folder), str(standalone), "64", "64", str(threads), str(runs)], timeout=3600)
    if info is None:
        raise RuntimeError(f"bench failed:\n{res.tail()}")
    return info


def _layout(embedding_bits: int, block: int, kernel: str) -> common.QuantLayout:
    # int4 symmetric, one scale per block (fp32 for MatMulNBits, bf16 in edgekit's tiles); lm_head int4; embedding as
    # chosen
    return common.QuantLayout(f"edgekit-onnx-int4-{kernel}-g{block}-emb{embedding_bits}", linear_bits=4, group=block,
                              scale_bytes=2 if kernel == "edgekit" else 4, embedding_bits=embedding_bits,
                              embedding_group=block, lm_head_bits=4, lm_head_group=block, float_bytes=4, kv_bytes=4)


def _measure(kernel: str, block: int, bits: int, shape: common.ModelShape, bandwidth: float, runs: int,
             validate: bool) -> dict[str, Any]:
    out = WORK / f"qwen05b-int4-{kernel}-g{block}-emb{bits}"
    _info, res = _child_export(out, bits, validate=False, block_size=block, kernel=kernel)
    speed = _child_bench(out, runs)
    bpt = common.decode_bytes_per_token(shape, _layout(bits, block, kernel), context=64 + 32)
    row = {"linear_kernel": kernel, "block_size": block, "embedding_bits": bits, "export_wall_s": round(res.wall_s, 1),
           "export_peak_rss_gb": round(res.peak_rss_bytes / 1e9, 2),
           "size_mb": round(common.path_bytes(out / "model.onnx") / 1e6, 1), **speed,
           "bytes_per_token_mb": round(bpt / 1e6, 1),
           "roofline_fraction": round(common.roofline_fraction(speed["decode_tok_s"], bpt, bandwidth), 3)}
    if validate:
        vinfo, vres = _child_export(WORK / f"qwen05b-int4-{kernel}-g{block}-emb{bits}-validated", bits, True, block,
                                    kernel)
        row.update(validated_export_wall_s=round(vres.wall_s, 1),
                   validated_export_peak_rss_gb=round(vres.peak_rss_bytes / 1e9, 2), validation=vinfo["validation"])
    log.info("%s block %d emb%d: %s", kernel, block, bits, row)
    return row


def run_benchmark(embedding_bits: tuple[int, ...] = (4,), runs: int = 3, validate: bool = False,
                  block_sizes: tuple[int, ...] = (128,), kernels: tuple[str, ...] = KERNELS) -> dict[str, Any]:
    ensure_checkpoint()
    shape = common.ModelShape.from_config(CHECKPOINT / "config.json")
    bandwidth = common.read_bandwidth_gbs(threads=2)
    rows = []
    for kernel in kernels:
        for block in block_sizes:
            for bits in embedding_bits:
                rows.append(_measure(kernel, block, bits, shape, bandwidth, runs, validate))
    return {"bandwidth_gbs": round(bandwidth, 1), "rows": rows, "machine": common.machine_facts(),
            "loadavg": list(__import__("os").getloadavg()), "when": time.strftime("%Y-%m-%d %H:%M")}


def write_markdown(result: dict[str, Any], path: Path = RESULTS) -> None:
    rows = result["rows"]
    base = {(r["block_size"], r["embedding_bits"]): r for r in rows if r["linear_kernel"] == "mlas"}
    lines = ["# ONNX target (edgekit-target-onnx) on the Qwen2.5-0.5B-shaped checkpoint", "",
             (f"{result['when']}; read bandwidth (2 threads) {result['bandwidth_gbs']} GB/s; load average at the end "
              f"{', '.join(f'{x:.1f}' for x in result['loadavg'])} (the machine is shared: compare only side-by-side "
              "runs)."), "",
             ("Command: `nice -n 10 python benchmarks/bench_onnx.py` (export in a child process; speed with "
              "`peers/edgekit_child.py bench`, 64-token prompt, 64 decoded, 2 threads, best of 3 after a warm-up). "
              "The peers are measured side by side by `benchmarks/run.py` (RESULTS.md), not here."), "",
             ("| linear kernel | artifact | size | prefill tok/s | decode tok/s | roofline | export wall / peak RSS | "
              "vs mlas decode / prefill |"), "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = base.get((r["block_size"], r["embedding_bits"]))
        vs = (f"{r['decode_tok_s'] / ref['decode_tok_s']:.2f}x / {r['prefill_tok_s'] / ref['prefill_tok_s']:.2f}x"
              if ref else "-")
        lines.append(
            f"| {r['linear_kernel']} | int4 g{r['block_size']}, emb int{r['embedding_bits']}, lm_head int4 | "
            f"{r['size_mb']} MB | {r['prefill_tok_s']} | {r['decode_tok_s']} | {r['roofline_fraction']:.0%} of "
            f"{r['bytes_per_token_mb']} MB/token | {r['export_wall_s']} s / {r['export_peak_rss_gb']} GB | {vs} |")
        if "validated_export_wall_s" in r:
            lines.append(f"| | ↳ same export with validation | | | | | {r['validated_export_wall_s']} s / "
                         f"{r['validated_export_peak_rss_gb']} GB | |")
    lines += ["", "```json", json.dumps(rows, indent=1, default=str), "```", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--linear-kernel", nargs="+", default=list(KERNELS), choices=KERNELS)
    ap.add_argument("--block-size", type=int, nargs="+", default=[128])
    ap.add_argument("--embedding-bits", type=int, nargs="+", default=[4])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--validate", action="store_true", help="also time an export with validation")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    result = run_benchmark(tuple(args.embedding_bits), args.runs, args.validate, tuple(args.block_size),
                           tuple(args.linear_kernel))
    write_markdown(result)
    print(json.dumps(result["rows"], default=str))


if __name__ == "__main__":
    main()
