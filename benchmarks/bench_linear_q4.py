"""edgekit's int4 linear in every weight form: symmetric (today's) vs per-group minimums (GGUF Q4_1's grid), bf16 vs
fp16 scales, on SmolLM2-135M's layer shapes (down 576x1536, up/gate 1536x576, lm_head 49152x576, N x K), at a decode
shape (M = 1) and a prefill shape (M = 64), with per-token (ExecuTorch) and per-group (ONNX Runtime) activations.

The compiled kernel (the ExecuTorch kernel library, the same linear_q4.h core the ONNX Runtime op builds) is called
through its C entry point with ExecuTorch's thread pool, arguments prepared once so a call costs ~1-2 us of ctypes.
Each configuration cycles over copies of its weights whose total exceeds the 32 MB L3, so a decode call streams from
memory as a model's decode step does. The four forms are measured round after round, interleaved (their order rotated
per round), and each form's time is compared with the symmetric-bf16 time of the SAME round: the median of those
per-round ratios is the reported cost (the machine is shared, its bandwidth moves by tens of percent in a minute).
Two measurements: process CPU time per call with a 1-thread pool (steadier when other work shares the cores), then
wall time with the full pool.

Usage: python benchmarks/bench_linear_q4.py [--rounds 9] [--group 32] [--prefill 64] [--budget-ms 40]
Prints a table and writes benchmarks/results/linear_q4.md.
"""
from __future__ import annotations

import argparse
import ctypes
import logging
import platform
import statistics
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)
RESULTS = Path(__file__).parent / "results" / "linear_q4.md"
LAYERS = {"down 576x1536": (576, 1536), "up/gate 1536x576": (1536, 576), "lm_head 49152x576": (49152, 576)}
FORMS = ("sym bf16", "mins bf16", "mins fp16", "sym fp16")
WORKING_SET = 64 * 2**20   # bytes of weight copies per form and layer: twice the 32 MB L3


def _weights(n: int, k: int, group: int, form: str) -> tuple[torch.Tensor, ...]:
    """(packed, scales, rowsum, mins or None) of random weights in `form`."""
    from edgekit.kernels import q4

    g = torch.Generator().manual_seed(n * 7 + k)
    dtype = torch.float16 if form.endswith("fp16") else torch.bfloat16
    scales = torch.rand(n, k // group, generator=g) * 0.02 + 1e-3
    if form.startswith("mins"):
        codes = torch.randint(0, 16, (n, k), generator=g, dtype=torch.uint8)
        return tuple(q4.pack(codes, scales, group, mins=-8 * scales, scale_dtype=dtype))
    codes = torch.randint(-8, 8, (n, k), generator=g, dtype=torch.int8)
    return (*q4.pack(codes, scales, group, scale_dtype=dtype), None)


class Weights:
    """Copies of one form's weights of one layer (their total beyond the L3, so decode streams from memory)."""

    def __init__(self, n: int, k: int, group: int, form: str):
        base = _weights(n, k, group, form)
        self.bytes = sum(t.numel() * t.element_size() for t in base if t is not None)
        self.copies = [base] + [tuple(None if t is None else t.clone() for t in base)
                                for _ in range(max(0, WORKING_SET // self.bytes - 1))]
        self.n, self.k, self.group, self.fp16 = n, k, group, int(form.endswith("fp16"))


class Case:
    """One form at one shape and activation mode: the C call's arguments for every weight copy."""

    def __init__(self, lib: ctypes.CDLL, w: Weights, m: int, per_group: bool):
        self.x = torch.randn(m, w.k) * 3
        self.y = torch.empty(m, w.n)
        self.fn = lib.edgekit_linear_q4_fused
        self.args = [(self.x.data_ptr(), packed.data_ptr(), scales.data_ptr(), rowsum.data_ptr(), None,
                      self.y.data_ptr(), m, w.k, w.n, w.group, 0, None, 0.0, None, None, None, None, None, 0, 0, 0, 0,
                      None if mins is None else mins.data_ptr(), w.fp16, int(per_group))
                     for packed, scales, rowsum, mins in w.copies]

    def run(self, calls: int, clock=time.perf_counter) -> float:
        """Seconds (of `clock`) per call over `calls` calls, cycling through the weight copies."""
        fn, args, count = self.fn, self.args, len(self.args)
        t0 = clock()
        for i in range(calls):
            if fn(*args[i % count]) != 0:
                raise RuntimeError("edgekit_linear_q4_fused rejected its arguments")
        return (clock() - t0) / calls


def interleaved(cases: dict[str, Case], calls: dict[str, int], rounds: int, clock) -> dict:
    """Per form: median seconds per call, and the median over rounds of its time / the same round's sym-bf16 time."""
    times: dict[str, list[float]] = {f: [] for f in FORMS}
    for r in range(rounds):
        for form in FORMS[r % len(FORMS):] + FORMS[:r % len(FORMS)]:   # the order rotates round by round
            times[form].append(cases[form].run(calls[form], clock))
    return {"us": {f: statistics.median(times[f]) * 1e6 for f in FORMS},
            "ratio": {f: statistics.median(t / b for t, b in zip(times[f], times["sym bf16"])) for f in FORMS}}


def measure(lib, weights: dict[str, Weights], m: int, per_group: bool, rounds: int, budget_s: float,
            threads: int) -> dict:
    """CPU time per call on a 1-thread pool (robust when the machine is shared), then wall time on the full pool."""
    from executorch.extension.pybindings.portable_lib import _unsafe_reset_threadpool

    cases = {form: Case(lib, weights[form], m, per_group) for form in FORMS}
    for case in cases.values():   # warm-up: page in every copy
        case.run(2 * len(case.args))
    calls = {f: max(len(c.args), int(budget_s / c.run(len(c.args)))) for f, c in cases.items()}
    _unsafe_reset_threadpool(1)
    cpu = interleaved(cases, {f: max(len(cases[f].args), c // 2) for f, c in calls.items()}, rounds,
                      time.process_time)
    _unsafe_reset_threadpool(threads)
    wall = interleaved(cases, calls, rounds, time.perf_counter)
    return {"cpu": cpu, "wall": wall}


def run(rounds: int = 9, group: int = 32, prefill: int = 64, budget_ms: float = 40.0) -> dict:
    from edgekit_executorch.kernels import load_kernel_library

    torch.set_num_threads(1)   # only the kernel's own pool runs
    lib = load_kernel_library()
    threads = int(lib.edgekit_kernels_threads())
    rows = []
    for layer, (n, k) in LAYERS.items():
        weights = {form: Weights(n, k, group, form) for form in FORMS}
        for m in (1, prefill):
            for per_group in (False, True):
                res = measure(lib, weights, m, per_group, rounds, budget_ms / 1e3, threads)
                rows.append({"layer": layer, "m": m, "activations": "per-group" if per_group else "per-token", **res})
                log.info("%s M=%d %s: mins fp16 %.3fx (cpu) %.3fx (wall)", layer, m, rows[-1]["activations"],
                         res["cpu"]["ratio"]["mins fp16"], res["wall"]["ratio"]["mins fp16"])
        del weights
    return {"rows": rows, "isa": lib.edgekit_linear_q4_isa().decode(), "threads": threads, "rounds": rounds,
            "group": group, "cpu": platform.processor() or platform.machine()}


def _table(res: dict, key: str) -> list[str]:
    lines = ["| layer (N x K) | M | activations | " + " | ".join(FORMS) + " |", "|---|---|---|" + "---|" * len(FORMS)]
    for row in res["rows"]:
        r = row[key]
        cells = [f"{r['us'][f]:.1f}" + ("" if f == "sym bf16" else f" ({r['ratio'][f]:.3f}x)") for f in FORMS]
        lines.append(f"| {row['layer']} | {row['m']} | {row['activations']} | " + " | ".join(cells) + " |")
    return lines


def markdown(res: dict) -> str:
    lines = [(f"# int4 linear: minimums and fp16 scales (group {res['group']}, ISA {res['isa']}, {res['rounds']} "
             "paired rounds)"), "",
             ("Microseconds per call (median over rounds); in brackets the median over rounds of the time / the same "
              "round's symmetric-bf16 time. Bytes per 32 weights of a row: 16 of codes + 2 of scale (+ 2 of minimum), "
              "so with minimums a call streams 11 % more bytes at group 32."), "",
             "## CPU time per call, 1-thread pool", "", *_table(res, "cpu"), "",
             f"## Wall time per call, {res['threads']}-thread pool", "", *_table(res, "wall"), ""]
    for key, name in (("cpu", "CPU time"), ("wall", "wall time")):
        ratios = [row[key]["ratio"]["mins fp16"] for row in res["rows"]]
        decode = [row[key]["ratio"]["mins fp16"] for row in res["rows"] if row["m"] == 1]
        lines.append(f"- mins fp16 vs sym bf16, {name}: median {100 * (statistics.median(ratios) - 1):+.1f} % over the "
                     f"table, decode rows median {100 * (statistics.median(decode) - 1):+.1f} %, worst row "
                     f"{100 * (max(ratios) - 1):+.1f} %.")
    lines += ["", f"Command: `python benchmarks/bench_linear_q4.py --rounds {res['rounds']} --group {res['group']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--group", type=int, default=32)
    ap.add_argument("--prefill", type=int, default=64, help="tokens of the prefill shape")
    ap.add_argument("--budget-ms", type=float, default=40.0, help="time per form per round")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    res = run(args.rounds, args.group, args.prefill, args.budget_ms)
    text = markdown(res)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return res


if __name__ == "__main__":
    main()
