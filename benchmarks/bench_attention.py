"""Attention microbenchmark: edgekit's int8 KV-cache kernel vs ExecuTorch's own llama::custom_sdpa (fp32 cache)
and llama::custom_quantized_sdpa (int8 cache), Qwen2.5-0.5B head geometry (14 q heads, 2 kv heads, D 64).

All three are the C++ kernels the ExecuTorch runtime runs, called in one process on ExecuTorch's thread pool:
ExecuTorch's through torch.ops (their AOT library wraps the same kernels), ours through its C entry point.
Two measurements, the three ops interleaved round by round:
- CPU ms per call with a 1-thread pool (process CPU time): robust when the machine is shared and loaded;
- wall ms per call with the full pool (min over rounds).
custom_quantized_sdpa is timed without the per-call int8 quantization of q its int8 x int8 path needs (flatters it).
Usage: nice -n 10 python benchmarks/bench_attention.py [--contexts 512,2048,4096] [--rounds 60]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

HQ, HKV, D = 14, 2, 64
RESULTS = Path(__file__).parent / "results" / "attention.md"
OPS = ("edgekit_int8", "custom_sdpa_fp32", "custom_quantized_sdpa_int8")


def make_case(ctx: int, t: int, max_seq_len: int) -> dict:
    """Caches filled up to ctx positions; the queried chunk is the last t of them (positions ctx-t .. ctx-1)."""
    from torch.ao.quantization.fx._decomposed import quantized_decomposed_lib  # noqa: F401

    from edgekit.kernels import quantize_rows

    torch.manual_seed(0)
    k, v = torch.randn(1, max_seq_len, HKV, D), torch.randn(1, max_seq_len, HKV, D)
    kq, ks = quantize_rows(k)
    vq, vs = quantize_rows(v)
    q = torch.randn(1, t, HQ, D)
    start = ctx - t
    # ExecuTorch's quantized sdpa takes int8 q with per-token asymmetric params; scales/zero points are [..., 1]
    qs, qzp = torch.ops.quantized_decomposed.choose_qparams_per_token_asymmetric(q, torch.int8)
    q8 = torch.ops.quantized_decomposed.quantize_per_token(q, qs, qzp, -128, 127, torch.int8)
    return {"q": q, "k": k, "v": v, "kq": kq, "vq": vq, "ks": ks, "vs": vs, "start": start,
            "pos": torch.arange(start, ctx), "q8": q8, "qs": qs.float(), "qzp": qzp.to(torch.int8),
            "ks4": ks.unsqueeze(-1).contiguous(), "vs4": vs.unsqueeze(-1).contiguous(),
            "zeros": torch.zeros(1, max_seq_len, HKV, 1, dtype=torch.int8), "out": torch.empty(q.shape)}


def op_calls(c: dict) -> dict:
    from edgekit_executorch.kernels import direct

    return {
        "edgekit_int8": lambda: direct.attention(c["q"], c["kq"], c["vq"], c["ks"], c["vs"], c["pos"], out=c["out"]),
        "custom_sdpa_fp32": lambda: torch.ops.llama.custom_sdpa(c["q"], c["k"], c["v"], c["start"], None, 0.0, True),
        "custom_quantized_sdpa_int8": lambda: torch.ops.llama.custom_quantized_sdpa(
            c["q8"], c["kq"], c["vq"], c["start"], None, 0.0, True, None, c["qzp"], c["qs"], c["zeros"], c["ks4"],
            c["zeros"], c["vs4"], False),
    }


def interleaved(calls: dict, rounds: int, clock) -> dict[str, list[float]]:
    for fn in calls.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            t0 = clock()
            fn()
            times[name].append((clock() - t0) * 1e3)
    return times


def check_agreement(c: dict) -> float:
    """Max abs difference of ours vs custom_sdpa on the dequantized caches (same semantics)."""
    from edgekit_executorch.kernels import direct

    from edgekit.kernels import dequantize_cache

    ours = direct.attention(c["q"], c["kq"], c["vq"], c["ks"], c["vs"], c["pos"])
    kd, vd = dequantize_cache(c["kq"], c["ks"]), dequantize_cache(c["vq"], c["vs"])
    return float((ours - torch.ops.llama.custom_sdpa(c["q"], kd, vd, c["start"], None, 0.0, True)).abs().max())


def run(contexts: list[int], rounds: int, pool_threads: int) -> list[dict]:
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

    rows = []
    for ctx in contexts:
        for t, label in ((1, "decode T=1"), (128, "prefill T=128")):
            c = make_case(ctx, t, max(ctx, 4096))
            n = rounds if t == 1 else max(5, rounds // 10)
            _unsafe_reset_threadpool(1)
            cpu = interleaved(op_calls(c), n, time.process_time)
            _unsafe_reset_threadpool(pool_threads)
            wall = interleaved(op_calls(c), n, time.perf_counter)
            row = {"ctx": ctx, "chunk": label, "diff": check_agreement(c),
                   "cpu": {k: statistics.median(v) for k, v in cpu.items()},
                   "wall": {k: min(v) for k, v in wall.items()}}
            rows.append(row)
            print(format_row(row), flush=True)
    return rows


def format_row(r: dict) -> str:
    cpu, wall = r["cpu"], r["wall"]
    e = cpu["edgekit_int8"]
    return (f"ctx {r['ctx']:5d} {r['chunk']:14s} 1-thread CPU ms: edgekit {e:.3f} | custom_sdpa "
            f"{cpu['custom_sdpa_fp32']:.3f} ({cpu['custom_sdpa_fp32'] / e:.2f}x) | custom_quantized_sdpa "
            f"{cpu['custom_quantized_sdpa_int8']:.3f} ({cpu['custom_quantized_sdpa_int8'] / e:.2f}x) || pool wall ms: "
            + " / ".join(f"{wall[k]:.3f}" for k in OPS) + f" | max|diff| {r['diff']:.1e}")


def write_results(rows: list[dict], threads: int, isa: str, cmd: str) -> None:
    import executorch.version

    head = ("| context | chunk | edgekit int8 | llama::custom_sdpa fp32 | speedup | "
            "llama::custom_quantized_sdpa int8 | speedup |")
    load = os.getloadavg()[0]
    setup = (f"Qwen2.5-0.5B head geometry: {HQ} query heads, {HKV} kv heads, head dim {D}; caches of 4096 positions "
             f"filled up to `context`. Host: {platform.machine()}, {os.cpu_count()} cores shared with other jobs (load "
             f"average {load:.1f} at the end of the run; CPU time is the primary measure), executorch {executorch.version.__version__}, "
             f"edgekit kernel path: {isa}.")
    caveat = ("custom_quantized_sdpa is timed without the per-call int8 quantization of q that its int8 x int8 path "
              "needs (flatters it). max |diff| = ours vs custom_sdpa run on the dequantized caches.")
    lines = ["# Attention microbenchmark (int8 KV cache)", "", setup, "", f"Command: `{cmd}`", "", caveat, "",
             "## CPU time per call, 1-thread pool (median, ms)", "", head, "|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        c = r["cpu"]
        e = c["edgekit_int8"]
        lines.append(f"| {r['ctx']} | {r['chunk']} | {e:.3f} | {c['custom_sdpa_fp32']:.3f} | "
                     f"{c['custom_sdpa_fp32'] / e:.2f}x | {c['custom_quantized_sdpa_int8']:.3f} | "
                     f"{c['custom_quantized_sdpa_int8'] / e:.2f}x |")
    lines += ["", f"## Wall time per call, {threads}-thread pool (min over rounds, ms)", "",
              ("With more runnable jobs than cores, a thread pool waits for its slowest worker: the multi-threaded "
              "prefill figures below mostly measure that oversubscription, not the kernels."), "",
              head + " max abs diff |",
              "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        w = r["wall"]
        e = w["edgekit_int8"]
        lines.append(f"| {r['ctx']} | {r['chunk']} | {e:.3f} | {w['custom_sdpa_fp32']:.3f} | "
                     f"{w['custom_sdpa_fp32'] / e:.2f}x | {w['custom_quantized_sdpa_int8']:.3f} | "
                     f"{w['custom_quantized_sdpa_int8'] / e:.2f}x | {r['diff']:.1e} |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contexts", default="512,2048,4096")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401  (llama::custom_sdpa, ...)
    from edgekit_executorch.kernels import direct, load_kernel_library

    torch.set_num_threads(1)  # only the ops' own thread pool runs
    threads = int(load_kernel_library().edgekit_kernels_threads())
    rows = run([int(x) for x in args.contexts.split(",")], args.rounds, threads)
    if not args.no_write:
        cmd = "nice -n 10 python benchmarks/bench_attention.py" + (
            f" --contexts {args.contexts}" if args.contexts != "512,2048,4096" else "") + (
            f" --rounds {args.rounds}" if args.rounds != 60 else "")
        write_results(rows, threads, direct.isa(), cmd)


if __name__ == "__main__":
    main()
