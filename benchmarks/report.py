"""RESULTS.md for benchmarks/run.py: one Entry per tool and model, rendered as Markdown tables."""
from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import common

HERE = Path(__file__).resolve().parent
AREA_ORDER = ("load", "attention", "coreml")
# SmolLM2-135M-Instruct's config (the embedded default model)
SMOLLM2 = common.ModelShape(vocab=49152, hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3, head_dim=64,
                            tied=True)
MODEL_TITLES = {"qwen05b": "Qwen2.5-0.5B-shaped checkpoint (random weights)",
                "smollm2": "The embedded default: SmolLM2-135M-Instruct (real weights)"}


@dataclass
class Entry:
    name: str
    kind: str                       # "edgekit" | "peer"
    label: str
    model: str                      # "qwen05b" | "smollm2"
    target: str | None
    quant: str = "?"
    command: str = ""
    artifact: str = ""
    size_bytes: int | None = None
    export_wall_s: float | None = None
    export_rss: int | None = None
    reused: bool = False
    exported_at: str = ""
    layout: common.QuantLayout | None = None
    notes: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    bench_argv: Callable[[int], list[Any]] | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    error: str | None = None
    exported_only: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "bench_argv"}
        d["layout"] = self.layout.name if self.layout else None
        return d

    @property
    def prefill(self) -> float | None:
        return max((r["prefill_tok_s"] for r in self.runs), default=None)

    @property
    def decode(self) -> float | None:
        return max((r["decode_tok_s"] for r in self.runs), default=None)

    def spread(self, key: str) -> str:
        vals = [r[key] for r in self.runs]
        return f"{min(vals):.0f}-{max(vals):.0f}" if len(vals) > 1 else "-"


def edgekit_layout(target: str, quant: str) -> str:
    """The storage layout assumed for an edgekit artifact's bytes per token when its bench module names none."""
    return {"8da4w": "8da4w-g32+emb8", "int4": "int4-g32", "fp16": "fp16", "fp32": "fp32"}.get(quant, "min-w4-g32")


def _shape(model: str, shape: common.ModelShape) -> common.ModelShape:
    return SMOLLM2 if model == "smollm2" else shape


def _bpt(e: Entry, shape: common.ModelShape, a: argparse.Namespace) -> int | None:
    if e.layout is None:
        return None
    return common.decode_bytes_per_token(_shape(e.model, shape), e.layout, a.prompt + a.gen // 2)


def _min_size(e: Entry, shape: common.ModelShape) -> int | None:
    nominal = common.NOMINAL.get(e.quant)
    if nominal is None:
        return None
    return common.theoretical_size_bytes(_shape(e.model, shape), common.LAYOUTS[nominal])


def _f(x: float | None, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def _wall(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:.0f} s" if s < 120 else f"{int(s // 60)} min {int(s % 60)} s"


def tool_table(entries: list[Entry], shape: common.ModelShape, facts: dict, a: argparse.Namespace) -> list[str]:
    bw = facts["read_bandwidth_gbs"]
    out = [("| tool | quant | artifact size | vs theoretical min | bytes/token (est.) | prefill tok/s (rounds) "
           "| decode tok/s (rounds) | roofline fraction | export wall | export peak RSS | run peak RSS | load s |"),
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in entries:
        if e.error and not e.exported_only:
            out.append(f"| {e.label} | - | - | - | - | not run | not run | - | - | - | - | - |")
            continue
        bpt, mn = _bpt(e, shape, a), _min_size(e, shape)
        roof = common.roofline_fraction(e.decode, bpt, bw) if (e.decode and bpt) else None
        ratio = f"{e.size_bytes / mn:.2f}× of {common.human_bytes(mn)}" if (mn and e.size_bytes) else "-"
        wall = _wall(e.export_wall_s) + (f" (reused; exported {e.exported_at[:16]})" if e.reused else "")
        rss_run = max((r["peak_rss_bytes"] for r in e.runs), default=None)
        load = min((r["load_s"] for r in e.runs), default=None)
        pre = f"{_f(e.prefill)} ({e.spread('prefill_tok_s')})" if e.runs else "n/a"
        dec = f"{_f(e.decode, '{:.2f}')} ({e.spread('decode_tok_s')})" if e.runs else "n/a"
        out.append(f"| {e.label} | {e.quant} | {common.human_bytes(e.size_bytes)} | {ratio} | "
                   f"{common.human_bytes(bpt)} | {pre} | {dec} | {_f(roof, '{:.2f}')} | {wall} | "
                   f"{common.human_bytes(e.export_rss)} | {common.human_bytes(rss_run)} | {_f(load, '{:.2f}')} |")
    return out


def target_tables(entries: list[Entry], model: str) -> list[str]:
    mine = [e for e in entries if e.model == model]
    peers = [e for e in mine if e.kind == "peer" and e.runs]
    out: list[str] = []
    if not any(e.kind == "edgekit" for e in mine):
        out.append("\nNo edgekit target in this run (see --only / --skip-peers).")
    for e in (e for e in mine if e.kind == "edgekit"):
        out.append(f"\n#### edgekit `{e.target}` ({e.quant}) against each peer\n")
        for n in e.notes:
            if n.startswith(("validated", "PARITY", "not validated")):
                out.append(f"Parity: {n}\n")
        if not e.runs:
            out.append(f"Not measured: {_first_line(e.error or 'no timed run')}\n")
            continue
        out += ["| against | peer prefill tok/s | peer decode tok/s | edgekit prefill ÷ peer | edgekit decode ÷ peer |",
                "|---|---|---|---|---|",
                f"| (edgekit {e.target} itself) | {_f(e.prefill)} | {_f(e.decode, '{:.2f}')} | 1.00 | 1.00 |"]
        for p in peers:
            out.append(f"| {p.label} | {_f(p.prefill)} | {_f(p.decode, '{:.2f}')} | {e.prefill / p.prefill:.2f} | "
                       f"{e.decode / p.decode:.2f} |")
        if not peers:
            out.append("| (no peer measured) | | | | |")
    return out


def _first_line(s: str) -> str:
    return s.strip().splitlines()[0] if s.strip() else s


def problems(entries: list[Entry]) -> list[str]:
    out = []
    for e in entries:
        if e.error:
            out.append(f"- **{e.label}** ({MODEL_TITLES[e.model]}): " + ("exported, not run: " if e.exported_only
                                                                         else "unavailable: ")
                       + "\n\n  ```\n  " + e.error.strip().replace("\n", "\n  ") + "\n  ```")
        for f in e.failures:
            out.append(f"- {e.label}: a timed round failed: `{_first_line(f)}`")
    return out


def provenance(entries: list[Entry]) -> list[str]:
    out = []
    for e in entries:
        if not e.artifact:
            continue
        how = (f"reused from the cache (exported {e.exported_at}, export took {_wall(e.export_wall_s)})" if e.reused
               else f"exported in this run ({_wall(e.export_wall_s)})")
        vers = ", ".join(f"{k} {v}" for k, v in e.versions.items())
        out.append(f"- {e.label} [{MODEL_TITLES[e.model].split(' (')[0]}]: `{e.command}` — {how}; "
                   f"`{Path(e.artifact).relative_to(HERE) if Path(e.artifact).is_relative_to(HERE) else e.artifact}`"
                   + (f"; venv: {vers}" if vers else "") + ("".join(f"; {n}" for n in e.notes)))
    return out


def area_sections() -> list[str]:
    res = HERE / "results"
    files = sorted(res.glob("*.md"), key=lambda p: (AREA_ORDER.index(p.stem) if p.stem in AREA_ORDER else 99, p.stem))
    out = []
    for p in files:
        text = p.read_text().strip()
        out += [f"\n## Area results: {p.stem} (from `benchmarks/results/{p.name}`)\n", _demote(text)]
    if not files:
        out.append("\n_No area results (benchmarks/results/*.md) were present at this run._")
    return out


def _demote(text: str) -> str:
    """Push the area file's headings two levels down, under this document's section."""
    return "\n".join("##" + line if line.startswith("#") else line for line in text.splitlines())


def render(entries: list[Entry], *, facts: dict, shape: common.ModelShape, ckpt: Path, sha: str,
           args: argparse.Namespace, started: dt.datetime, wall_s: float, argv: list[str]) -> str:
    a = args
    lines = [
        "# edgekit benchmarks: side by side with the peer tools",
        "",
        (f"Run {started.strftime('%Y-%m-%d %H:%M UTC')} on this machine, {_wall(wall_s)} in all, by "
        f"`python benchmarks/run.py {' '.join(argv)}`."),
        "Written by `benchmarks/run.py`; the machine is shared and noisy, so compare figures from one run only.",
        "",
        "## Machine",
        "",
        common.facts_markdown(facts),
        f"- Read bandwidth again after the runs: {facts.get('read_bandwidth_after_gbs', 0):.1f} GB/s",
        "",
        "## Settings",
        "",
        (f"- Model: {MODEL_TITLES['qwen05b']}, `make_random_checkpoint.py OUT 0.5b` (hidden {shape.hidden}, "
        f"{shape.layers} layers, {shape.heads} heads / {shape.kv_heads} KV heads, vocab {shape.vocab}, tied, bf16); "
        f"tree sha256 `{sha[:16]}…`."),
        (f"- Prompt {a.prompt} tokens (ids `(i*7919)%3000+10`), {a.gen} tokens decoded greedily, {a.threads} threads, "
        f"best of {a.rounds} interleaved rounds: each round runs every tool once in a fresh process (load, one "
        "warm-up generation, one timed generation), tool after tool, so drifting load hits all tools alike."),
        ("- Roofline fraction = decode tok/s ÷ (read bandwidth ÷ bytes per token). Bytes per token = every linear "
        "weight + the lm_head + one embedding row + norms at the artifact's storage layout, plus K and V of "
        f"{a.prompt + a.gen // 2} positions (the mean decode context); layouts in `benchmarks/common.py` (LAYOUTS)."),
        ("- Theoretical minimum size = every weight matrix at the scheme's nominal bits (4-bit: int4 + one fp16 scale "
        "per 32; 8-bit: int8 + one fp16 scale per row), tied embedding stored once, norms in fp16, no metadata."),
        *([f"- Only these tools were selected (--only): {a.only}."] if getattr(a, "only", "") else []),
        ("- Export peak RSS: the export process and the children it waited for (wait4 ru_maxrss). Run peak RSS: the "
        "benchmark process (load + warm-up + one timed run)."),
    ]
    if getattr(a, "note", None):
        lines += ["", "## Run notes", ""] + [f"- {n}" for n in a.note]
    for model in ("qwen05b", "smollm2"):
        mine = [e for e in entries if e.model == model]
        if not mine:
            continue
        lines += ["", f"## {MODEL_TITLES[model]}", "", "### Every tool", ""]
        lines += tool_table(mine, shape, facts, a)
        lines += ["", "### Per target"]
        lines += target_tables(entries, model)
    lines += ["", "## Not measured, and why", ""] + (problems(entries) or ["Nothing: every tool ran."])
    lines += ["", "## How each artifact was made", ""] + provenance(entries)
    lines += area_sections()
    return "\n".join(lines) + "\n"
