"""ExecuTorch target benchmark on the Qwen2.5-0.5B-shaped random checkpoint, side by side with optimum-executorch.

Exports each scheme variant (max_seq_len 512, last-position logits) in a child process (wall time, peak RSS), then
times prefill / decode with benchmarks/peers/et_bench.py (the peers' /work/shared/peers/et_bench.py with the host
side of a step done as edgekit's session does it: no pybindings clone, numpy argmax, see there; 64-token prompt, 64
decoded, best of 3 after a warm-up, 2 threads) on every edgekit .pte AND optimum-executorch's cached .pte, interleaved round by round,
and computes the decode bandwidth roofline. Every timed child (exports, speed runs, the bandwidth probe) holds
/tmp/edgekit-bench.lock, so timed runs of the parallel engineers never overlap. Writes benchmarks/results/executorch.md.

    nice -n 10 python benchmarks/bench_executorch.py [--variants g128-emb4,g32-emb8] [--skip-export] [--rounds 3]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import common

log = logging.getLogger("bench_executorch")
CACHE = HERE / ".cache"
CHECKPOINT = CACHE / "qwen05b"
PEERS = Path("/work/shared/peers")
ET_BENCH = Path(__file__).resolve().parent / "peers" / "et_bench.py"  # the same loop for every .pte (see there)
LOCK = "/tmp/edgekit-bench.lock"
PROMPT, DECODE, THREADS, MAX_SEQ_LEN = 64, 64, 2, 512
# scheme variants: 8da4w linears (and output layer) at the group size, token embedding at the given bits
VARIANTS: dict[str, dict[str, int | str]] = {
    "g32-emb8": {"group_size": 32, "embedding_bits": 8},     # optimum-executorch's scheme
    "g128-emb8": {"group_size": 128, "embedding_bits": 8},
    "g128-emb4": {"group_size": 128, "embedding_bits": 4},
    # the same scheme, its int4 linears run by edgekit::linear_q4 (edgekit's kernel) instead of XNNPACK, and its
    # attention by edgekit::attention (the default with linear_kernel edgekit) ...
    "g128-emb4-edgekit": {"group_size": 128, "embedding_bits": 4, "linear_kernel": "edgekit"},
    # ... or by ExecuTorch's llama::custom_sdpa, as before 2026-12-02 (what the attention kernel is worth)
    "g128-emb4-edgekit-sdpa": {"group_size": 128, "embedding_bits": 4, "linear_kernel": "edgekit",
                               "attention_kernel": "llama"},
}
LAYOUTS = {"g32-emb8": "8da4w-g32+emb8", "g128-emb8": "8da4w-g128+emb8", "g128-emb4": "8da4w-g128+emb4",
           "g128-emb4-edgekit": "8da4w-g128+emb4", "g128-emb4-edgekit-sdpa": "8da4w-g128+emb4"}  # common.py
DEFAULT_VARIANT = "g128-emb4-edgekit"  # what run.py's edgekit export uses (export_for_benchmark)
PEER_README = {"prefill_tok_s": "332-345", "decode_tok_s": "79-86", "pte_mb": 415, "export": "25 min / 4.8 GB"}

EXPORT_CHILD = """
import json, sys, time
t0 = time.perf_counter()
import torch
import edgekit
model = edgekit.load(sys.argv[1], dtype=torch.bfloat16)  # the checkpoint's dtype: no fp32 copy of the weights
art = edgekit.export(model, "android", quant="8da4w", max_seq_len=int(sys.argv[4]), last_logits_only=True,
                     out=sys.argv[2], force=True, validate=False, show_progress=False, **json.loads(sys.argv[3]))
print(json.dumps({"wall_s": time.perf_counter() - t0, "stages": art.metadata.get("stage_seconds"),
                  "delegation": art.metadata.get("delegation")}))
"""


def ensure_checkpoint() -> Path:
    if not (CHECKPOINT / "config.json").exists():
        res = common.run_child([sys.executable, PEERS / "make_random_checkpoint.py", CHECKPOINT, "0.5b"])
        if not res.ok:
            raise RuntimeError(f"make_random_checkpoint failed: {res.tail()}")
    return CHECKPOINT


def artifact_dir(variant: str) -> Path:
    return CACHE / f"executorch-qwen05b-{variant}"


def peer_pte() -> Path | None:
    hits = sorted((CACHE / "peers" / "optimum-executorch").glob("*/model.pte"))
    return hits[-1] if hits else None


def export_for_benchmark(checkpoint: Path, out: Path, max_seq_len: int = MAX_SEQ_LEN) -> dict[str, Any]:
    """run.py's hook: the edgekit export of the default variant (run.py times this child itself)."""
    from edgekit_executorch.quantize import default_group_size, linear_in_features

    import edgekit

    opts = dict(VARIANTS[DEFAULT_VARIANT])
    model = edgekit.load(checkpoint, dtype=None)  # stored dtype, as bench_onnx.export_for_benchmark
    widths = linear_in_features(model.config)
    if any(f % opts["group_size"] for f in widths):  # SmolLM2: 576 = 64 x 9 takes group 64
        opts["group_size"] = default_group_size(widths)
    art = edgekit.export(model, "android", quant="8da4w", max_seq_len=max_seq_len, last_logits_only=True,
                         out=out, validate=False, show_progress=False, **opts)
    notes = ("linear_kernel=edgekit: the int4 linears run in edgekit's own kernel (edgekit::qkv_rope_q4 / "
             "fused_linear_q4) and the cache write + attention in edgekit::qkv_cache_attention, so the .pte needs "
             "edgekit's kernel library beside the ExecuTorch runtime; the XNNPACK "
             "form (the target's default, stock runtimes) is bench_executorch.py's g128-emb4 row"
             if opts.get("linear_kernel") == "edgekit" else "")
    layout = LAYOUTS[DEFAULT_VARIANT].replace("-g128+", f"-g{opts['group_size']}+")
    return {"quant": "8da4w", "options": opts, "layout": layout,
            "stages": art.metadata.get("stage_seconds"), "notes": notes, "load_dtype": "stored"}


def export(variant: str) -> dict[str, Any]:
    """One export in a fresh child holding the timing lock; its wall time (lock wait excluded) and peak RSS."""
    out = artifact_dir(variant)
    argv = ["flock", LOCK, sys.executable, "-c", EXPORT_CHILD, ensure_checkpoint(), out, json.dumps(VARIANTS[variant]),
            str(MAX_SEQ_LEN)]
    data, res = common.run_json_child(argv, log=CACHE / "logs" / f"bench-executorch-export-{variant}.log")
    if data is None or not res.ok:
        raise RuntimeError(f"export {variant} failed (exit {res.returncode}):\n{res.tail()}")
    info = {"export_wall_s": round(data["wall_s"], 1), "export_peak_rss_gb": round(res.peak_rss_bytes / 2**30, 2),
            "stages": {k: round(v, 1) for k, v in (data.get("stages") or {}).items()},
            "delegation": {k: data["delegation"][k] for k in ("delegated_subgraphs", "delegated_nodes",
                                                              "non_delegated_nodes", "undelegated_linears")},
            "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    (out / "bench.json").write_text(json.dumps(info, indent=1))
    return info


# et_bench.py with the kernel libraries an edgekit .pte lists (custom_op_libraries) registered first, the way
# edgekit's session loads them: after ExecuTorch's pybindings, RTLD_GLOBAL. The timed loop is et_bench.py's own.
WITH_LIBS = """
import ctypes, json, runpy, sys
from executorch.extension.pybindings import portable_lib  # noqa: F401
for lib in json.loads(sys.argv[1]):
    ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def custom_libs(pte: Path) -> list[str]:
    meta = pte.with_name("artifact.json")
    libs = json.loads(meta.read_text())["metadata"].get("custom_op_libraries", []) if meta.exists() else []
    return [str(pte.parent / lib) for lib in libs]   # folder-relative (the artifact's kernels/)


def speed(pte: Path) -> dict[str, Any]:
    """benchmarks/peers/et_bench.py (load, warm-up, best of 3) on one .pte, holding the timing lock."""
    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS))
    libs = custom_libs(pte)
    cmd = [sys.executable, "-c", WITH_LIBS, json.dumps(libs)] if libs else [sys.executable]
    data, res = common.run_json_child(["flock", LOCK, *cmd, ET_BENCH, pte, PROMPT, DECODE],
                                      env=env, timeout=900)
    if data is None:
        raise RuntimeError(f"et_bench on {pte} failed:\n{res.tail()}")
    return data | {"run_peak_rss_mb": round(res.peak_rss_bytes / 2**20)}


def bytes_per_token(variant: str | None, context: int) -> int:
    """Bytes a decode step reads (common.decode_bytes_per_token): linears and output layer at 4 bits + one bf16 scale
    per group (XNNPACK keeps blockwise scales in bf16), one embedding row, norms, K+V of `context` positions (fp32).
    variant None: optimum-executorch's layout (g32, 8-bit embedding)."""
    layout = common.LAYOUTS[LAYOUTS[variant or "g32-emb8"]]
    return common.decode_bytes_per_token(common.ModelShape.from_config(CHECKPOINT), layout, context)


def run(variants: list[str], skip_export: bool, rounds: int) -> dict[str, Any]:
    ensure_checkpoint()
    rows: dict[str, dict[str, Any]] = {}
    for v in variants:
        out = artifact_dir(v)
        if skip_export and (out / "model.pte").exists() and (out / "bench.json").exists():
            rows[v] = json.loads((out / "bench.json").read_text()) | {"reused_export": True}
        else:
            rows[v] = export(v)
        rows[v]["pte"] = str(out / "model.pte")
    peer = peer_pte()
    if peer is not None:
        rows["optimum-executorch"] = {"pte": str(peer), "readme": PEER_README}
    else:
        log.warning("no cached optimum-executorch .pte under %s: run benchmarks/run.py once to export it", CACHE)
    bandwidth = [common.read_bandwidth_gbs(THREADS)]
    for r in range(rounds):  # interleaved: every .pte once per round, so load changes hit all of them alike
        for name, row in rows.items():
            res = speed(Path(row["pte"]))
            row.setdefault("runs", []).append(res)
            log.info("round %d %-20s prefill %7.1f tok/s  decode %6.2f tok/s", r + 1, name, res["prefill_tok_s"],
                     res["decode_tok_s"])
    bandwidth.append(common.read_bandwidth_gbs(THREADS))
    context = PROMPT + DECODE // 2
    for name, row in rows.items():
        row["pte_mb"] = round(Path(row["pte"]).stat().st_size / 1e6, 1)
        row["prefill_tok_s"] = max(x["prefill_tok_s"] for x in row["runs"])
        row["decode_tok_s"] = max(x["decode_tok_s"] for x in row["runs"])
        per_token = bytes_per_token(None if name == "optimum-executorch" else name, context)
        row["bytes_per_token_mb"] = round(per_token / 1e6, 1)
        row["roofline_decode_tok_s"] = round(max(bandwidth) * 1e9 / per_token, 1)
        row["roofline_fraction"] = round(row["decode_tok_s"] / row["roofline_decode_tok_s"], 3)
    quality_top1 = quality(variants)
    result = {"smollm2_top1_agreement_vs_fp32": quality_top1, "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "rows": rows,
              "read_bandwidth_gbs": [round(b, 1) for b in bandwidth], "load_average": os.getloadavg(),
              "context_for_roofline": context}
    write_markdown(result)
    return result


QUALITY_TEXT = ("The quick brown fox jumps over the lazy dog. Edge devices run small language models locally, so a "
                "phone can answer questions without a network. Quantization stores each weight in four bits with a "
                "scale per group, which shrinks the file and speeds up decoding because fewer bytes are read for "
                "every generated token. The cost is a small change in the predicted next token.")


def quality(variants: list[str]) -> dict[str, Any]:
    """Top-1 agreement with fp32 on SmolLM2-135M (real weights), teacher-forced over QUALITY_TEXT, of the quantized
    eager reference each variant's export is validated against (no export needed; validation bounds the .pte's
    distance to it)."""
    import numpy as np
    import torch
    from edgekit_executorch.quantize import default_group_size, linear_in_features

    import edgekit
    from edgekit.targets.base import TargetSpec
    from edgekit.targets.registry import get_target

    model = edgekit.load("smollm2-135m")
    ids = model.tokenizer.encode(QUALITY_TEXT)
    tokens, pos = torch.tensor([ids]), torch.arange(len(ids))
    with torch.no_grad():
        want = model.decoder(len(ids) + 1)(tokens, pos)[0].argmax(-1).numpy()
        out: dict[str, Any] = {"tokens": len(ids)}
        for v in variants:
            opts = dict(VARIANTS[v])
            if any(f % opts["group_size"] for f in linear_in_features(model.config)):  # SmolLM2: 576 = 64 x 9
                opts["group_size"] = default_group_size(linear_in_features(model.config))
            spec = TargetSpec(quant="8da4w", max_seq_len=len(ids) + 1, options=opts)
            got = get_target("android").reference(model, spec)(tokens, pos)[0].argmax(-1).numpy()
            out[f"{v} (as g{opts['group_size']})"] = round(float(np.mean(got == want)), 4)
    return out


NOTES = [
    ("Notes from 2026-11-26 (machine at load average 10-16 on 2 cores during these runs; wall times are not quiet-machine "
    "figures):"),
    ("- Export profile (py-spy, 0.5B, g32): quantization was torchao's whole-tensor HQQ (20 iterations streaming every "
    "fp32 temporary through memory); it is now a chunked in-place HQQ with bit-identical codes and scales "
    "(tests/executorch/test_quantize.py). The rest is torch.export retracing: capture ran run_decompositions({}) "
    "and to_edge_transform_and_lower runs it again (twice), so capture no longer does it."),
    ("- Memory: the checkpoint is bf16; loaded in bf16, the export quantizes each weight chunk by chunk behind fp32 "
    "placeholders, so the 2.5 GB fp32 copy of the weights never exists; lowering (XNNPACK packing) is the peak."),
    ("- SmolLM2-135M top-1 agreement with fp32 over the same 73 tokens, by part (eager references): w8 + 8-bit "
    "embedding 84.9%, fp32 with only a 4-bit embedding 87.7%, fp32 with only a 4-bit output layer 68.5%; 8da4w "
    "g32 + 8-bit embedding 42.5% (optimum-executorch's scheme), g64 + 8-bit embedding 37.0%, g64 + 4-bit embedding "
    "39.7%, g32/g64 + 8-bit output layer 53.4%. The 4-bit weights (the output layer most) cost the quality on a "
    "135M model, not the group size."),
]


def _ratio(row: dict[str, Any], peer: dict[str, Any] | None, key: str) -> str:
    return f"{row[key] / peer[key]:.2f}x" if peer else "-"


def write_markdown(r: dict[str, Any]) -> Path:
    rows, peer = r["rows"], r["rows"].get("optimum-executorch")
    lines = [
        "# ExecuTorch target (edgekit) on the Qwen2.5-0.5B-shaped random checkpoint",
        "",
        (f"Run {r['date']}, load average at the end {', '.join(f'{x:.1f}' for x in r['load_average'])} (2 cores, "
        "shared). Command: `nice -n 10 python benchmarks/bench_executorch.py` (every timed child under "
        "`flock /tmp/edgekit-bench.lock`). 8da4w (int8 dynamic activations, int4 weights, output layer included), "
        f"max_seq_len {MAX_SEQ_LEN}, last-position logits; {PROMPT}-token prompt, {DECODE} decoded, {THREADS} "
        "threads; benchmarks/peers/et_bench.py (warm-up, best of 3; the peers' loop without the pybindings clone and with "
        "numpy's argmax, as edgekit's session runs a step) on every .pte, rounds interleaved, best round."),
        "",
        ("| .pte | prefill tok/s | decode tok/s | decode vs peer | prefill vs peer | MB | MB read/token | roofline "
        "tok/s | of roofline | export wall | export peak RSS |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        export = (f"{row['export_wall_s']} s | {row['export_peak_rss_gb']} GB" if "export_wall_s" in row
                  else "25 min (README) | 4.8 GB (README)")
        lines.append(f"| {name} | {row['prefill_tok_s']} | {row['decode_tok_s']} | {_ratio(row, peer, 'decode_tok_s')}"
                     f" | {_ratio(row, peer, 'prefill_tok_s')} | {row['pte_mb']} | {row['bytes_per_token_mb']} | "
                     f"{row['roofline_decode_tok_s']} | {row['roofline_fraction']:.0%} | {export} |")
    lines += [
        "",
        (f"Roofline: read bandwidth {max(r['read_bandwidth_gbs'])} GB/s (best of the probes before and after: "
        f"{r['read_bandwidth_gbs']}, `torch.ones(128M).sum()` at 2 threads) ÷ the bytes a decode step reads (4-bit "
        "weights + one bf16 scale per group for every linear and the output layer, one embedding row, K+V at "
        f"position {r['context_for_roofline']})."),
        "",
        "Per round (prefill / decode tok/s):",
    ]
    for name, row in rows.items():
        runs = ", ".join(f"{x['prefill_tok_s']} / {x['decode_tok_s']}" for x in row["runs"])
        lines.append(f"- {name}: {runs}")
    q = r.get("smollm2_top1_agreement_vs_fp32") or {}
    if q:
        lines += ["", f"Quality: top-1 agreement with fp32 on SmolLM2-135M (real weights), teacher-forced over "
                      f"{q.get('tokens')} tokens of QUALITY_TEXT, quantized eager reference (what the .pte is validated "
                      "against): " + ", ".join(f"{k} {v:.1%}" for k, v in q.items() if k != "tokens")
                  + " (SmolLM2's width 576 takes group 64 where a variant says 128)."]
    lines += ["", *NOTES, "", "```json", json.dumps(r, indent=1, default=str), "```"]
    out = HERE / "results" / "executorch.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list among {', '.join(VARIANTS)}")
    ap.add_argument("--skip-export", action="store_true", help="reuse exports in benchmarks/.cache if present")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    variants = [v for v in a.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    print(json.dumps(run(variants, a.skip_export, a.rounds), indent=1, default=str))


if __name__ == "__main__":
    main()
