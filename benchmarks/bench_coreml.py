"""Core ML target benchmark: export time, peak RSS and .mlpackage size for the Qwen2.5-0.5B-shaped random checkpoint
at fp16 and w4 (int4, one fp16 scale per block of 32).

    flock /tmp/edgekit-bench.lock nice -n 10 python benchmarks/bench_coreml.py [--quants fp16 w4] [--max-seq-len 512]
        [--load-dtypes fp16 fp32]

Each export runs in its own child process (benchmarks/common.run_child: wall time, peak RSS via wait4), without the
parity check (validate=False, like the peers' exporters; tests/coreml validates). Inside the child a thread samples
VmRSS and keeps the peak per export stage (load, build, lower, serialize). Core ML cannot run on Linux, so there
are no speed figures here. Writes benchmarks/results/coreml.md. Importable: `run_benchmark(...) -> dict`;
benchmarks/run.py uses `export_for_benchmark`.
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Self

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
import common

log = logging.getLogger("bench_coreml")
CHECKPOINT = BENCH_DIR / ".cache" / "qwen05b"
WORK = BENCH_DIR / ".cache" / "coreml"
RESULTS = BENCH_DIR / "results" / "coreml.md"
GOALS = {"export_rss_gb": 3.0, "w4_size_over_theory": 0.10}


class StageRSS:
    """Samples this process's RSS (/proc/self/status VmRSS) every 20 ms from a thread and keeps the peak per export
    stage (edgekit.progress's current stage; "load" before the export starts). numpy / torch allocations are
    invisible to tracemalloc, RSS sees them all."""

    def __init__(self, period_s: float = 0.02):
        self.period_s, self.peaks, self._stop = period_s, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss_bytes() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def _stage(self) -> str:
        from edgekit import progress

        active = progress._ACTIVE[-1].current if progress._ACTIVE else None
        return active or ("load" if not self.peaks or list(self.peaks) == ["load"] else "other")

    def _run(self) -> None:
        while not self._stop.is_set():
            stage, rss = self._stage(), self.rss_bytes()
            self.peaks[stage] = max(self.peaks.get(stage, 0), rss)
            self._stop.wait(self.period_s)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def export_for_benchmark(checkpoint: Path, out: Path, max_seq_len: int = 512, quant: str = "w4",
                         validate: bool = False, load_dtype: str = "fp16") -> dict[str, Any]:
    """Export `checkpoint` for iOS. Weights are loaded as fp16 by default: the ML program stores fp16 (or int8/int4
    made from the fp16 values), and the MIL builder then takes each fp16 weight as a view instead of a copy.
    `load_dtype="fp32"` measures what an fp32-loaded model costs."""
    import torch

    import edgekit

    dtypes = {"fp16": torch.float16, "fp32": torch.float32}
    with StageRSS() as rss:
        model = edgekit.load(checkpoint, dtype=dtypes[load_dtype])
        art = edgekit.export(model, "ios", quant=quant, max_seq_len=max_seq_len, last_logits_only=True, out=out,
                             force=True, validate=validate, show_progress=False)
    return {"quant": quant, "layout": common.NOMINAL.get(quant), "stage_seconds": art.metadata["stage_seconds"],
            "stage_peak_rss_gb": {k: round(v / 1e9, 2) for k, v in rss.peaks.items()},
            "load_dtype": {"fp16": "float16", "fp32": "float32"}[load_dtype],
            "ane_findings": art.metadata["ane_findings"], "validation": art.metadata.get("validation"),
            "notes": "Core ML ML program (iOS 18), fp16 states; not runnable on Linux"}


def ensure_checkpoint() -> Path:
    if not (CHECKPOINT / "model.safetensors").exists():
        subprocess.run([sys.executable, "/work/shared/peers/make_random_checkpoint.py", str(CHECKPOINT), "0.5b"],
                       check=True)
    return CHECKPOINT


def theoretical_bytes(shape: common.ModelShape, quant: str, max_seq_len: int) -> int:
    """Weights at the scheme's nominal layout (w4: 4 bits + an fp16 scale per 32 = 4.5 bits; fp16: 16 bits), plus what
    stays fp16 in the program: norms, biases, the rope cos/sin tables and the additive causal mask."""
    layout = common.LAYOUTS[common.NOMINAL[quant]]
    buffers = 2 * (2 * max_seq_len * shape.head_dim + max_seq_len * max_seq_len)
    return common.theoretical_size_bytes(shape, layout) + buffers


def _child_export(out: Path, quant: str, max_seq_len: int, load_dtype: str) -> tuple[dict, common.ChildResult]:
    code = (f"import sys, json; sys.path.insert(0, {str(BENCH_DIR)!r}); import bench_coreml as b; "
            f"from pathlib import Path; print(json.dumps(b.export_for_benchmark(Path({str(CHECKPOINT)!r}), "
            f"Path({str(out)!r}), max_seq_len={max_seq_len}, quant={quant!r}, load_dtype={load_dtype!r}), default=str))")
    info, res = common.run_json_child([sys.executable, "-c", code], nice=10, timeout=7200)
    if info is None:
        raise RuntimeError(f"export failed:\n{res.tail()}")
    return info, res


def run_benchmark(quants: tuple[str, ...] = ("w4", "fp16"), max_seq_len: int = 512,
                  load_dtypes: tuple[str, ...] = ("fp16",)) -> dict[str, Any]:
    ensure_checkpoint()
    shape = common.ModelShape.from_config(CHECKPOINT / "config.json")
    rows = []
    for quant, load_dtype in [(q, d) for d in load_dtypes for q in quants]:
        out = WORK / f"qwen05b-{quant}"
        info, res = _child_export(out, quant, max_seq_len, load_dtype)
        size = common.path_bytes(out / "model.mlpackage")
        theory = theoretical_bytes(shape, quant, max_seq_len)
        rows.append({"quant": quant, "load_dtype": load_dtype, "export_wall_s": round(res.wall_s, 1),
                     "export_peak_rss_gb": round(res.peak_rss_bytes / 1e9, 2), "size_mb": round(size / 1e6, 1),
                     "theoretical_mb": round(theory / 1e6, 1), "size_over_theory": round(size / theory - 1, 4),
                     "stage_seconds": info["stage_seconds"], "stage_peak_rss_gb": info["stage_peak_rss_gb"],
                     "ane_findings": info["ane_findings"]})
        log.info("%s: %s", quant, rows[-1])
    return {"rows": rows, "max_seq_len": max_seq_len, "machine": common.machine_facts(),
            "loadavg": list(__import__("os").getloadavg()), "when": time.strftime("%Y-%m-%d %H:%M")}


def write_markdown(result: dict[str, Any], path: Path = RESULTS) -> None:
    lines = ["# Core ML target (edgekit-target-coreml) on the Qwen2.5-0.5B-shaped checkpoint", "",
             (f"{result['when']}; max_seq_len {result['max_seq_len']}; load average at the end "
              f"{', '.join(f'{x:.1f}' for x in result['loadavg'])} (the machine is shared with other work: wall times "
              f"are noisy)."), "",
             ("Command: `nice -n 10 python benchmarks/bench_coreml.py` (each export in a child process, "
              "validate=False; Core ML cannot run on Linux, so no speed figures)."), "",
             ("| quant | model loaded as | .mlpackage | theoretical | over theory | export wall | export peak RSS | "
              "stages (s) | peak RSS per stage (GB) |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        stages = ", ".join(f"{k} {v:.0f}" for k, v in r["stage_seconds"].items())
        rss = ", ".join(f"{k} {v:.2f}" for k, v in r["stage_peak_rss_gb"].items())
        lines.append(f"| {r['quant']} | {r['load_dtype']} | {r['size_mb']} MB | {r['theoretical_mb']} MB | {r['size_over_theory']:+.1%} | "
                     f"{r['export_wall_s']} s | {r['export_peak_rss_gb']} GB | {stages} | {rss} |")
    lines += ["", (f"Goals: peak RSS <= {GOALS['export_rss_gb']} GB; w4 package within "
                   f"{GOALS['w4_size_over_theory']:.0%} of params x 4.5 bits (int4 + fp16 scale per 32) plus what "
                   f"stays fp16 (norms, biases, rope tables, causal mask)."), "",
              "Neural Engine findings (w4 export):", ""]
    w4 = [r for r in result["rows"] if r["quant"] == "w4"]
    lines += [f"- {f}" for f in (w4[0]["ane_findings"] if w4 else [])]
    lines += ["", "```json", json.dumps(result["rows"], indent=1, default=str), "```", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quants", nargs="+", default=["w4", "fp16"])
    ap.add_argument("--max-seq-len", type=int, default=512)
    ap.add_argument("--load-dtypes", nargs="+", default=["fp16"], choices=["fp16", "fp32"],
                    help="dtype the EdgeModel is loaded in before export (fp16: what the program stores)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO)
    result = run_benchmark(tuple(args.quants), args.max_seq_len, tuple(args.load_dtypes))
    write_markdown(result)
    print(json.dumps(result["rows"], default=str))


if __name__ == "__main__":
    main()
