"""Speculative decoding (prompt-lookup n-gram drafts, edgekit/runtime/speculate.py) against plain decoding, on the
shipped prompt set (edgekit/evaldata/speculation/prompts.json), SmolLM2-135M, each target's default export.

    python benchmarks/bench_speculate.py [--targets executorch,onnx] [--max-new-tokens 128] [--rounds 3]
                                         [--artifacts DIR] [--widths] [--model 0.5b [--widths-only]]

Greedy chat generation; per prompt and round the two modes run back to back, their order alternating round after
round (this machine's bandwidth drifts by tens of percent within minutes, so only paired figures are compared).
Per row: decode tok/s of each mode (median over rounds), the speed-up, tokens per forward, the share of drafted
tokens kept, and whether the text is plain greedy's (where not, the top-two gap of the plain run's logits where they
part: a wide forward is not bit-identical to a one-token step in every runtime). A set's speed-up is the geometric
mean of its prompts'. --widths adds the cost of a T-token forward relative to one token (T = 1..9, after a 64-token
prompt), which is what the cost model measures. Core ML is left out: on Linux its numerics run in edgekit's numpy
evaluator, whose speed says nothing about a phone. `--model 0.5b` runs the Qwen2.5-0.5B-shaped random checkpoint
(benchmarks/peers/make_random_checkpoint.py) instead: its replies are noise, so only its forward costs
(--widths-only) say something, namely what verifying a draft costs at that size. Writes
benchmarks/results/speculation.md (or speculation-0.5b.md).
"""
from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
import common

RESULTS = BENCH_DIR / "results" / "speculation.md"
WORK = Path.home() / ".cache" / "edgekit" / "bench-speculate"
MAX_SEQ_LEN = 1024
THREADS = 2


def random_checkpoint(size: str) -> Path:
    import subprocess

    path = WORK / f"random-{size}"
    if not (path / "config.json").exists():
        subprocess.run([sys.executable, str(BENCH_DIR / "peers" / "make_random_checkpoint.py"), str(path), size],
                       check=True)
    return path


def export(model, target: str, artifacts: Path | None, last_logits_only: bool = False):
    import edgekit
    from edgekit.targets.base import Artifact

    out = (artifacts or WORK) / (target + ("-last" if last_logits_only else ""))
    if (out / "artifact.json").exists() and artifacts is not None:
        return Artifact.load(out)
    print(f"export {out.name} ...", flush=True)
    return edgekit.export(model, target, max_seq_len=MAX_SEQ_LEN, out=out, force=True, validate=False,
                          evaluate=False, show_progress=False, last_logits_only=last_logits_only)


def prefill_costs(sessions: dict[str, object], length: int = 256, rounds: int = 5) -> dict[str, float]:
    """Median prefill tok/s of a `length`-token prompt per session, the sessions alternating round after round."""
    prompt = np.random.default_rng(1).integers(100, 1000, size=(1, length))
    got: dict[str, list[float]] = {name: [] for name in sessions}
    for r in range(rounds):
        for name in (list(sessions) if r % 2 == 0 else list(sessions)[::-1]):
            s = sessions[name]
            s.reset()
            t0 = time.perf_counter()
            s.forward(prompt, np.arange(length))
            got[name].append(length / (time.perf_counter() - t0))
    return {name: statistics.median(v) for name, v in got.items()}


def width_costs(session, rounds: int = 5) -> dict[int, float]:
    """Median seconds of a T-token forward after a 64-token prompt, relative to T = 1."""
    prompt = np.random.default_rng(0).integers(100, 1000, size=(1, 64))
    times: dict[int, list[float]] = {t: [] for t in range(1, 10)}
    for _ in range(rounds):
        for t, seconds in times.items():
            session.reset()
            session.forward(prompt, np.arange(64))
            t0 = time.perf_counter()
            session.forward(prompt[:, :t], np.arange(64, 64 + t))
            seconds.append(time.perf_counter() - t0)
    one = statistics.median(times[1])
    return {t: statistics.median(v) / one for t, v in times.items()}


def run_prompt(session, model, prompt: str, max_new: int, rounds: int) -> dict:
    from edgekit.runtime.generate import generate_text
    from edgekit.runtime.speculate import divergence_gap

    figures: dict[str, list] = {"off": [], "ngram": []}
    outputs: dict[str, list[int]] = {}
    stats = {}
    for r in range(rounds):
        for mode in (("off", "ngram") if r % 2 == 0 else ("ngram", "off")):
            res = generate_text(session, model.tokenizer, prompt, chat=True, max_new_tokens=max_new,
                                speculate=mode, stop_ids=model.stop_ids)
            figures[mode].append(res.decode_tokens_per_s)
            outputs[mode] = res.token_ids
            if mode == "ngram":
                stats = res.speculation
                prompt_ids = res.prompt_ids
    off, on = statistics.median(figures["off"]), statistics.median(figures["ngram"])
    same = outputs["off"] == outputs["ngram"]
    margin = None if same else divergence_gap(session, prompt_ids, outputs["off"], outputs["ngram"])
    return {"off": off, "ngram": on, "speedup": on / off if off else float("nan"), "tokens": len(outputs["off"]),
            "tokens_per_forward": stats.get("tokens_per_forward"), "acceptance": stats.get("acceptance_rate"),
            "same": same, "margin": margin}


def geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def write(rows: dict, widths: dict, prefills: dict, argv: list[str], when: str, model_name: str, out: Path) -> None:
    if not any(rows.values()):
        intro = (f"`python benchmarks/bench_speculate.py {' '.join(argv)}` on {when}: each target's default export "
                 f"(max_seq_len {MAX_SEQ_LEN}, every position's logits), {THREADS} threads; the forward costs only "
                 "(median of 5 rounds), which is what the cost model weighs a draft against.")
        lines = [f"# Speculative decoding: what verifying a draft costs ({model_name})", "", intro, ""]
    else:
        lines = [f"# Speculative decoding: prompt-lookup drafts vs plain decoding ({model_name})", "",
                 (f"`python benchmarks/bench_speculate.py {' '.join(argv)}` on {when}: each target's default export "
                  f"(max_seq_len {MAX_SEQ_LEN}, every position's logits), greedy chat replies, {THREADS} threads; per "
                  "prompt the two modes back to back, order alternating by round, median decode tok/s. Speed-up of a "
                  "set: geometric mean of its prompts'. 'same': the reply equals plain greedy token for token; "
                  "otherwise the top-two logit gap of the plain run where the two part."), ""]
    for target, per in rows.items():
        lines += [f"## {target}"]
        if per:
            lines.append("")
            lines += [("| set | prompt | tokens | plain tok/s | speculative tok/s | speed-up | tokens/forward | "
                       "drafts kept | same as plain |"), "|---|---|---|---|---|---|---|---|---|"]
        for (kind, pid), f in per.items():
            same = "yes" if f["same"] else f"no (gap {f['margin']:.3f})"
            acc = "-" if f["acceptance"] is None else f"{f['acceptance']:.0%}"
            lines.append(f"| {kind} | {pid} | {f['tokens']} | {f['off']:.1f} | {f['ngram']:.1f} | "
                         f"{f['speedup']:.2f}x | {f['tokens_per_forward'] or 1:.2f} | {acc} | {same} |")
        for kind in ("grounded", "open_ended"):
            ups = [f["speedup"] for (k, _), f in per.items() if k == kind]
            if ups:
                lines.append(f"| **{kind}** | geometric mean | | | | **{geomean(ups):.2f}x** | | | |")
        if target in widths:
            w = widths[target]
            lines += ["", "Cost of a T-token forward relative to one token (after a 64-token prompt): "
                      + ", ".join(f"T={t}: {v:.2f}" for t, v in w.items())]
        if target in prefills:
            f = prefills[target]
            lines += ["", (f"What every position's logits cost a 256-token prefill (the same export with last-position "
                           f"logits only, alternating): {f['all']:.0f} tok/s vs {f['last']:.0f} tok/s "
                           f"({f['all'] / f['last']:.2f}x).")]
        lines.append("")
    lines += [common.facts_markdown(common.machine_facts()), ""]
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--targets", default="executorch,onnx")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--artifacts", type=Path, default=None,
                   help="use (or write) the exports in DIR/<target> instead of exporting afresh")
    p.add_argument("--widths", action="store_true", help="also measure the T-token forward costs")
    p.add_argument("--prefill", action="store_true",
                   help="also measure what every position's logits cost a 256-token prefill (a last-logits twin)")
    p.add_argument("--prompts", default=None, help="comma list of prompt ids (default: all)")
    p.add_argument("--model", default="smollm2-135m", help="smollm2-135m (default) or 0.5b (random, shaped)")
    p.add_argument("--widths-only", action="store_true", help="measure the forward costs only (no generation)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    import edgekit
    from edgekit.evaldata import speculation_prompts
    from edgekit.targets.registry import get_target

    torch.set_num_threads(THREADS)
    random = args.model == "0.5b"
    model = edgekit.load(random_checkpoint("0.5b") if random else args.model)
    model_name = "Qwen2.5-0.5B-shaped, random weights" if random else "SmolLM2-135M"
    artifacts = args.artifacts or (WORK / "random-0.5b-exports" if random else None)
    sets = speculation_prompts()
    wanted = set(args.prompts.split(",")) if args.prompts else None
    rows: dict = {}
    widths: dict = {}
    prefills: dict = {}
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for target in args.targets.split(","):
        art = export(model, target, artifacts)
        session = get_target(target).session(art)
        session.reset()   # warm-up: the first forwards of a session pay for allocation and thread start
        for t in (1, 4, 9):
            session.forward(np.ones((1, t), dtype=np.int64), np.arange(t))
        if args.widths or args.widths_only:
            widths[target] = width_costs(session)
            print(target, "widths", {t: round(v, 2) for t, v in widths[target].items()}, flush=True)
        if args.prefill:
            twin = get_target(target).session(export(model, target, artifacts, last_logits_only=True))
            prefills[target] = prefill_costs({"all": session, "last": twin})
            print(target, "prefill tok/s", prefills[target], flush=True)
        rows[target] = {}
        for kind in () if args.widths_only else ("grounded", "open_ended"):
            for item in sets[kind]:
                if wanted and item["id"] not in wanted:
                    continue
                f = run_prompt(session, model, item["prompt"], args.max_new_tokens, args.rounds)
                rows[target][kind, item["id"]] = f
                print(f"{target} {kind} {item['id']}: {f['off']:.1f} -> {f['ngram']:.1f} tok/s "
                      f"({f['speedup']:.2f}x), {f['tokens_per_forward']} tok/fwd, kept {f['acceptance']}, "
                      f"same {f['same']}", flush=True)
    out = RESULTS.with_name("speculation-0.5b.md") if random else RESULTS
    write(rows, widths, prefills, argv if argv is not None else sys.argv[1:], when, model_name, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
