"""Load time and peak memory of edgekit.load on the Qwen2.5-0.5B-shaped random checkpoint (bf16 safetensors).

usage: python benchmarks/bench_load.py [--runs N]
Builds the checkpoint once with ../shared/peers/make_random_checkpoint.py into benchmarks/.cache/qwen05b, then loads
it in fresh child processes (fp32, the default dtype). Peak RSS is the child's own ru_maxrss; the goal is peak RSS
<= 1.3x the checkpoint's fp32 size. Prints the numbers and writes benchmarks/results/load.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import struct
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CKPT = HERE / ".cache" / "qwen05b"
MAKER = Path("/work/shared/peers/make_random_checkpoint.py")
GOAL = 1.3
log = logging.getLogger("bench_load")

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import torch, edgekit
t_import = time.perf_counter() - t0
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t1 = time.perf_counter()
m = edgekit.load(sys.argv[1])
t_load = time.perf_counter() - t1
n = sum(w.numel() for w in m.weights.values())
print(json.dumps({"load_s": t_load, "import_s": t_import, "baseline_rss_kb": base,
                  "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "parameters": n,
                  "weight_bytes": sum(w.numel() * w.element_size() for w in m.weights.values()),
                  "threads": torch.get_num_threads()}))
"""


def ensure_checkpoint() -> Path:
    if not (CKPT / "config.json").exists():
        log.info("building %s (once)", CKPT)
        subprocess.run([sys.executable, str(MAKER), str(CKPT), "0.5b"], check=True)
    return CKPT


def checkpoint_facts(folder: Path) -> dict:
    """Element count and bytes on disk, from the safetensors headers alone."""
    elements, disk = 0, 0
    for f in sorted(folder.glob("*.safetensors")):
        disk += f.stat().st_size
        with f.open("rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        header.pop("__metadata__", None)
        for meta in header.values():
            count = 1
            for d in meta["shape"]:
                count *= d
            elements += count
    return {"elements": elements, "disk_bytes": disk, "fp32_bytes": elements * 4}


def measure(folder: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(folder)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_report(facts: dict, runs: list[dict], path: Path) -> str:
    best = min(runs, key=lambda r: r["load_s"])
    peak = max(r["peak_rss_kb"] for r in runs) * 1024
    ratio = peak / facts["fp32_bytes"]
    gb = 1e9
    all_times = ", ".join(f"{r['load_s']:.1f}" for r in runs)
    lines = [
        "# Load: Qwen2.5-0.5B-shaped random checkpoint (bf16 safetensors -> fp32 EdgeModel)",
        "",
        (f"Measured {time.strftime('%Y-%m-%d %H:%M')} on {platform.machine()}, {os.cpu_count()} cores "
         f"(shared machine, load average {os.getloadavg()[0]:.1f} at the end: times are noisy), "
         f"`python benchmarks/bench_load.py --runs {len(runs)}`."),
        "",
        "| metric | value |",
        "|---|---|",
        f"| parameters | {facts['elements'] / 1e6:.1f} M |",
        f"| checkpoint on disk (bf16) | {facts['disk_bytes'] / gb:.2f} GB |",
        f"| fp32 size (the goal's unit) | {facts['fp32_bytes'] / gb:.2f} GB |",
        f"| load time (best of {len(runs)}) | {best['load_s']:.1f} s (all: {all_times} s) |",
        f"| peak RSS of the loading process | {peak / gb:.2f} GB |",
        f"| of which Python + torch + edgekit before loading | {best['baseline_rss_kb'] * 1024 / gb:.2f} GB |",
        f"| peak RSS / fp32 size | **{ratio:.2f}x** (goal <= {GOAL}x: {'met' if ratio <= GOAL else 'MISSED'}) |",
        "",
        "Peak RSS is `ru_maxrss` of a fresh child process that imports edgekit and calls `edgekit.load(folder)`; it",
        "includes the interpreter and torch. Tensors are read one at a time and converted to fp32, so the bf16 copy",
        "of one tensor is the only extra memory at any point.",
    ]
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    folder = ensure_checkpoint()
    facts = checkpoint_facts(folder)
    runs = []
    for i in range(args.runs):
        r = measure(folder)
        log.info("run %d: load %.1f s, peak RSS %.2f GB (baseline %.2f GB)", i + 1, r["load_s"],
                 r["peak_rss_kb"] / 1e6 * 1.024, r["baseline_rss_kb"] / 1e6 * 1.024)
        runs.append(r)
    sys.stdout.write(write_report(facts, runs, HERE / "results" / "load.md"))


if __name__ == "__main__":
    main()
