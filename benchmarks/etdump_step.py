"""Where a decode step of a .pte goes, from ExecuTorch's ETDump: delegate calls, XNNPACK's int4 GEMMs, other
delegated ops, portable op calls, per step.

    python benchmarks/etdump_step.py FOLDER[:FILE] [FOLDER[:FILE] ...] [--steps 64] [--rounds 2]

FOLDER is an edgekit artifact or any folder holding a .pte (FILE defaults to model.pte), e.g. optimum-executorch's
export in benchmarks/.cache/peers/optimum-executorch/*/. Profiling adds per-op bookkeeping, so the absolute times are
slower than an unprofiled run; compare the .pte files with each other, in one run. Rounds alternate the files.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def step_breakdown(folder: Path, pte: str, steps: int) -> dict[str, float]:
    from edgekit_executorch import standalone_session as ss

    doc = {"files": [pte], "metadata": {"max_seq_len": steps + 2, "last_logits_only": True}}
    with tempfile.TemporaryDirectory(prefix="edgekit-etdump-") as tmp:
        session = ss.PteSession(folder, threads=2, profile_dir=tmp, doc=doc)
        logits = session.forward(np.asarray([[1]], dtype=np.int64), np.arange(1, dtype=np.int64))
        for i in range(steps):
            tok = int(logits[0, -1].argmax())
            logits = session.forward(np.asarray([[tok]], dtype=np.int64), np.asarray([1 + i], dtype=np.int64))
        rows = session.op_profile()
    n = steps + 1
    by_name = {r["name"]: r for r in rows}
    delegate, portable = by_name["DELEGATE_CALL"], by_name.get("OPERATOR_CALL", {"calls": 0, "total_ms": 0.0})
    gemm = sum(r["total_ms"] for r in rows if r["op_type"] == "delegate" and "QB4W" in r["name"])
    other = sum(r["total_ms"] for r in rows if r["op_type"] == "delegate" and "QB4W" not in r["name"])
    return {"delegate_calls": delegate["calls"] / n, "delegate_ms": delegate["total_ms"] / n, "int4_gemm_ms": gemm / n,
            "other_delegated_ms": other / n, "portable_calls": portable["calls"] / n,
            "portable_ms": portable["total_ms"] / n}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pte", nargs="+", help="FOLDER or FOLDER:FILE")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    for r in range(args.rounds):
        for spec in args.pte:
            folder, _, file = spec.partition(":")
            b = step_breakdown(Path(folder), file or "model.pte", args.steps)
            print(f"round {r + 1} {folder}: per step {b['delegate_calls']:.0f} delegate calls ({b['delegate_ms']:.2f} ms), "
                  f"int4 GEMMs {b['int4_gemm_ms']:.2f} ms, other delegated ops {b['other_delegated_ms']:.2f} ms, "
                  f"{b['portable_calls']:.0f} portable op calls ({b['portable_ms']:.2f} ms)")


if __name__ == "__main__":
    main()
