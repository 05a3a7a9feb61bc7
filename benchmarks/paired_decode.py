"""Paired decode/prefill timing of several .pte files in ONE process, alternating file by file each round.

    python benchmarks/paired_decode.py FOLDER [FOLDER ...] [--rounds 12]

On this shared machine the memory bandwidth swings by tens of percent within a minute, so run.py's best-of-rounds
across processes can pair one tool's lucky round with another's unlucky one. Here every round runs each file back to
back (a few seconds apart) in the same process and runtime (ExecuTorch pybindings, the same loop as et_bench.py), and
the per-round ratio against the last folder is reported with its median. A FOLDER is an edgekit artifact (its
kernel libraries are loaded as its session does) or any folder with a model.pte (e.g. optimum-executorch's export).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

PROMPT, DECODE = 64, 64


def open_pte(folder: Path):
    from edgekit_executorch import standalone_session as ss

    if (folder / "artifact.json").exists():
        return ss.open_session(folder, threads=2)
    return ss.PteSession(folder, threads=2, doc={"files": ["model.pte"], "metadata": {"max_seq_len": 512}})


def one_run(session) -> tuple[float, float]:
    ids = np.asarray([[(i * 7919) % 3000 + 10 for i in range(PROMPT)]], dtype=np.int64)
    session.reset()
    t0 = time.perf_counter()
    logits = session.forward(ids, np.arange(PROMPT, dtype=np.int64))
    t1 = time.perf_counter()
    for i in range(DECODE):
        tok = int(logits[0, -1].argmax())
        logits = session.forward(np.asarray([[tok]], dtype=np.int64), np.asarray([PROMPT + i], dtype=np.int64))
    t2 = time.perf_counter()
    return PROMPT / (t1 - t0), DECODE / (t2 - t1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--rounds", type=int, default=12)
    a = ap.parse_args()
    sessions = {str(f): open_pte(f) for f in a.folders}
    for s in sessions.values():
        one_run(s)  # warm-up
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in sessions}
    for r in range(a.rounds):
        for name, s in sessions.items():
            runs[name].append(one_run(s))
        print(f"round {r + 1}: " + " | ".join(f"{Path(n).name}: prefill {v[-1][0]:.0f} decode {v[-1][1]:.1f}"
                                              for n, v in runs.items()), flush=True)
    base = str(a.folders[-1])
    summary = {}
    for name, v in runs.items():
        dec = [x[1] / b[1] for x, b in zip(v, runs[base], strict=True)]
        pre = [x[0] / b[0] for x, b in zip(v, runs[base], strict=True)]
        summary[Path(name).name] = {
            "decode_tok_s_median": round(statistics.median(x[1] for x in v), 2),
            "decode_tok_s_best": round(max(x[1] for x in v), 2),
            "prefill_tok_s_median": round(statistics.median(x[0] for x in v), 1),
            "decode_ratio_per_round": [round(x, 3) for x in dec],
            "decode_ratio_median": round(statistics.median(dec), 3),
            "prefill_ratio_median": round(statistics.median(pre), 3)}
    print(json.dumps({"against": Path(base).name, "rounds": a.rounds, "rows": summary}, indent=1))


if __name__ == "__main__":
    main()
