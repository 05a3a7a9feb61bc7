"""Paired decode/prefill timing of several artifacts in ONE process, alternating artifact by artifact each round.

    python benchmarks/paired_decode.py FOLDER [FOLDER ...] [--rounds 12]

On this shared machine the memory bandwidth swings by tens of percent within a minute, so run.py's best-of-rounds
across processes can pair one tool's lucky round with another's unlucky one. Here every round runs each file back to
back (a few seconds apart) in the same process, and the per-round ratio against the last folder is reported with
its median. A FOLDER is an edgekit artifact of the executorch or onnx target (run by that target's standalone
session, its kernel libraries loaded as the session does), a folder with a model.pte (e.g. optimum-executorch's
export; the same loop as et_bench.py) or an onnxruntime-genai folder (genai_config.json, e.g. the model builder's;
the same loop as ogai_bench.py). Mixing runtimes in one process is fine: each keeps its own thread pool, and only
one runs at a time.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

PROMPT, DECODE = 64, 64


class GenaiRunner:
    """An onnxruntime-genai folder, timed like /work/shared/peers/ogai_bench.py."""

    def __init__(self, folder: Path):
        import onnxruntime_genai as og

        self.og, self.model = og, og.Model(str(folder))

    def run(self) -> tuple[float, float]:
        og, ids = self.og, [(i * 7919) % 3000 + 10 for i in range(PROMPT)]
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=PROMPT + DECODE, min_length=PROMPT + DECODE, do_sample=False)
        gen = og.Generator(self.model, params)
        t0 = time.perf_counter()
        gen.append_tokens(ids)
        t1 = time.perf_counter()
        n = 0
        while not gen.is_done() and n < DECODE:
            gen.generate_next_token()
            n += 1
        return PROMPT / (t1 - t0), n / (time.perf_counter() - t1)


def open_runner(folder: Path):
    """A session (edgekit artifact or plain .pte) or a GenaiRunner, per what the folder holds."""
    if (folder / "artifact.json").exists():
        target = json.loads((folder / "artifact.json").read_text()).get("target")
        if target == "onnx":
            from edgekit_onnx.standalone_session import open_session
        else:
            from edgekit_executorch.standalone_session import open_session
        return open_session(folder, threads=2)
    if (folder / "genai_config.json").exists():
        return GenaiRunner(folder)
    from edgekit_executorch import standalone_session as ss

    return ss.PteSession(folder, threads=2, doc={"files": ["model.pte"], "metadata": {"max_seq_len": 512}})


def one_run(session) -> tuple[float, float]:
    if isinstance(session, GenaiRunner):
        return session.run()
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
    sessions = {str(f): open_runner(f) for f in a.folders}
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
