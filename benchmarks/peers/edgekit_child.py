"""Child processes for the edgekit side of benchmarks/run.py (each one a fresh process, so wall time and peak RSS are
its own). Runs in edgekit's venv.

    edgekit_child.py export TARGET CHECKPOINT OUT [--max-seq-len 512]
        Exports with `benchmarks/bench_<TARGET>.py`'s `export_for_benchmark(checkpoint, out, max_seq_len=...)` when
        that module defines it, else with `edgekit.export(edgekit.load(CHECKPOINT), TARGET, max_seq_len=...,
        last_logits_only=True, out=OUT)` (the target's default quantization, validated as a user's export is).
        Prints one JSON line: {"artifact", "quant", "standalone_session", "via", "metadata"}.
    edgekit_child.py validate TARGET CHECKPOINT FOLDER [--load-dtype stored|float32|float16|bfloat16]
        edgekit's validation of an exported folder (what `edgekit.export(validate=True)` runs), in its own process so
        the export's time and memory stay the export's. The checkpoint is loaded as the export loaded it (its
        `load_dtype`: a GGUF file's weights rounded to bf16 quantize to other int4 codes than their exact fp32
        values). Prints {"validation": "...", "validate_s": ...}.
    edgekit_child.py bench FOLDER STANDALONE_PY PROMPT_LEN GEN_LEN THREADS RUNS
        Opens the artifact with the target's standalone session (the runtime alone: no edgekit, no export code) and
        times a greedy run exactly like the peer scripts (same prompt ids). Prints one JSON line.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent.parent
# options of the generic export, per target: the same scheme as that target's peer (optimum-executorch: 8da4w, group
# 32, 8-bit embedding), so the side-by-side compares like with like
GENERIC_OPTIONS: dict[str, dict[str, Any]] = {"executorch": {"group_size": 32, "embedding_bits": 8}}


def export(target: str, checkpoint: str, out: str, max_seq_len: int) -> dict[str, Any]:
    sys.path.insert(0, str(BENCH_DIR))
    mod = None
    if (BENCH_DIR / f"bench_{target}.py").exists():
        mod = importlib.import_module(f"bench_{target}")
    hook = getattr(mod, "export_for_benchmark", None)
    from edgekit.targets.registry import get_target

    tgt = get_target(target)
    ckpt: Any = Path(checkpoint) if Path(checkpoint).exists() else checkpoint  # a path, or a built-in name
    t0 = time.perf_counter()
    if hook is not None:
        info = dict(hook(ckpt, Path(out), max_seq_len=max_seq_len) or {})
        via = f"bench_{target}.export_for_benchmark"
    else:
        import edgekit

        art = edgekit.export(edgekit.load(ckpt), target, max_seq_len=max_seq_len, last_logits_only=True, out=out,
                             validate=False, show_progress=False, **GENERIC_OPTIONS.get(target, {}))
        info = {"quant": art.metadata.get("quant"), "options": art.metadata.get("options")}
        via = "edgekit.export (generic: " + (f"bench_{target}.py has no export_for_benchmark" if mod else
                                             f"bench_{target}.py not present") + ")"
    info["export_only_s"] = round(time.perf_counter() - t0, 1)
    doc = json.loads((Path(out) / "artifact.json").read_text()) if (Path(out) / "artifact.json").exists() else {}
    info.setdefault("quant", doc.get("metadata", {}).get("quant"))
    info.setdefault("standalone_session", str(tgt.standalone_session() or ""))
    return {"artifact": out, "via": via, "metadata": doc.get("metadata", {}), **info}


def validation_summary(val: dict[str, Any]) -> str:
    """One line of compare()'s figures for RESULTS.md: the difference, the tolerance it met and why, top-1."""
    floor = val.get("reference_noise_floor")
    why = (f"max(target {val['target_tolerance']:.3g}, 2 x the reference's noise floor {floor:.3g})"
           if floor is not None else "the target's")
    top1 = ", ".join(f"top-1 vs {k.removeprefix('top1_agreement_vs_')} {v:.2f}" for k, v in val.items()
                     if k.startswith("top1_agreement_vs_"))
    return (f"validated: max |Δlogit| {val['max_abs_logit_diff']:.3g} <= tolerance {val['tolerance']:.3g} ({why}) "
            f"over {val['prompt_tokens']} prefill + {val['decode_steps']} decode steps; {top1}")


LOAD_DTYPES = ("stored", "float32", "float16", "bfloat16")   # "stored": edgekit.load(dtype=None)


def validate(target: str, checkpoint: str, out: str, max_seq_len: int, load_dtype: str = "float32") -> dict[str, Any]:
    """edgekit's own validation (prefill + 8 greedy decode steps against the target's reference), run after an
    export made with validate=False and timed apart, so a parity failure is reported beside the speed figures."""
    import torch

    import edgekit
    from edgekit.errors import ParityError
    from edgekit.targets.base import Artifact, TargetSpec
    from edgekit.targets.registry import get_target
    from edgekit.validate import compare

    tgt = get_target(target)
    ckpt: Any = Path(checkpoint) if Path(checkpoint).exists() else checkpoint
    dtype = None if load_dtype == "stored" else getattr(torch, load_dtype)
    t0 = time.perf_counter()
    info: dict[str, Any] = {"validate_load_dtype": load_dtype}
    try:
        art = Artifact.load(out)
        md = art.metadata
        spec = TargetSpec(quant=md["quant"], max_seq_len=md.get("max_seq_len", max_seq_len),
                          kv_cache=md.get("kv_cache", "fp32"), last_logits_only=md.get("last_logits_only", True),
                          options=dict(md.get("options") or {}))
        val = compare(tgt, art, edgekit.load(ckpt, dtype=dtype), spec)
        info["validation"] = validation_summary(val)
    except ParityError as exc:
        info["validation"] = f"PARITY FAILED: {exc}"
    except Exception as exc:  # noqa: BLE001  (no host session etc.: reported)
        info["validation"] = f"not validated here: {type(exc).__name__}: {str(exc)[:200]}"
    info["validate_s"] = round(time.perf_counter() - t0, 1)
    return info


def bench(folder: str, standalone: str, prompt_len: int, gen_len: int, threads: int, runs: int) -> dict[str, Any]:
    import numpy as np

    spec = importlib.util.spec_from_file_location("edgekit_standalone_session", standalone)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    t0 = time.perf_counter()
    sess = mod.open_session(folder, threads=threads)
    load = time.perf_counter() - t0
    ids = np.array([[(i * 7919) % 3000 + 10 for i in range(prompt_len)]], dtype=np.int64)

    def run() -> tuple[float, float]:
        sess.reset()
        t0 = time.perf_counter()
        out = sess.forward(ids, np.arange(prompt_len, dtype=np.int64))
        t1 = time.perf_counter()
        tok = int(out[0, -1].argmax())
        for i in range(gen_len):
            out = sess.forward(np.array([[tok]], dtype=np.int64), np.array([prompt_len + i], dtype=np.int64))
            tok = int(out[0, -1].argmax())
        t2 = time.perf_counter()
        return t1 - t0, gen_len / (t2 - t1)

    run()
    res = [run() for _ in range(runs)]
    return {"load_s": round(load, 3), "prefill_tok_s": round(prompt_len / min(r[0] for r in res), 1),
            "decode_tok_s": round(max(r[1] for r in res), 2), "threads": threads, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    for cmd in ("export", "validate"):
        e = sub.add_parser(cmd)
        e.add_argument("target")
        e.add_argument("checkpoint")
        e.add_argument("out")
        e.add_argument("--max-seq-len", type=int, default=512)
        if cmd == "validate":
            e.add_argument("--load-dtype", choices=LOAD_DTYPES, default="float32")
    b = sub.add_parser("bench")
    b.add_argument("folder")
    b.add_argument("standalone")
    for name in ("prompt_len", "gen_len", "threads", "runs"):
        b.add_argument(name, type=int)
    a = ap.parse_args()
    if a.cmd == "export":
        result = export(a.target, a.checkpoint, a.out, a.max_seq_len)
    elif a.cmd == "validate":
        result = validate(a.target, a.checkpoint, a.out, a.max_seq_len, a.load_dtype)
    else:
        result = bench(a.folder, a.standalone, a.prompt_len, a.gen_len, a.threads, a.runs)
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
