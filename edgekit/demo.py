"""The main job end to end on the embedded default: export to every target, validate, bundle, profile, chat, report."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from edgekit.errors import EdgekitError

log = logging.getLogger(__name__)
console = Console(stderr=True)

# The first scheme a target offers from this list is the demo's default: 4-bit weights where the target has them.
QUANT_PREFERENCE = ("8da4w", "int4", "w4")
PROMPT = "What is the capital of France? Answer in one sentence."


class DemoStageError(EdgekitError):
    """A demo stage failed; the message names the stage and the target."""


@dataclass
class TargetRun:
    target: str
    quant: str = ""
    bundle: str = ""
    validation: dict[str, Any] = field(default_factory=dict)
    export_s: float = 0.0
    profile: dict[str, Any] | None = None
    profile_skipped: str = ""
    answer: str = ""
    eager_answer_match: bool | None = None
    error: str = ""


def pick_quant(schemes: tuple[str, ...], default: str) -> str:
    return next((q for q in QUANT_PREFERENCE if q in schemes), default)


def _stage(name: str, target: str):
    """Wrap a stage so that any EdgekitError names it."""

    class _Ctx:
        def __enter__(self):
            console.rule(f"[bold]{name}[/] · {target}", style="dim")
            self.t0 = time.perf_counter()
            return self

        def __exit__(self, et, ev, tb):
            if et is not None and issubclass(et, EdgekitError) and not isinstance(ev, DemoStageError):
                raise DemoStageError(f"demo stage '{name}' for target {target!r} failed: {type(ev).__name__}: {ev}") from ev
            return False

    return _Ctx()


def run_demo(model: str = "smollm2-135m", out: str | Path = "demo-out", targets: list[str] | None = None,
             prompt_lengths: tuple[int, ...] = (64, 256), decode_tokens: int = 64, runs: int = 2,
             chat_tokens: int = 48, max_seq_len: int = 512, force: bool = True) -> dict[str, Any]:
    """Run every stage; returns the summary (also written to <out>/summary.json). Failures are kept per target."""
    import edgekit
    from edgekit.bundle import bundle
    from edgekit.model.info import model_info
    from edgekit.targets.registry import get_target

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    with _stage("load", model):
        m = edgekit.load(model)
        info = model_info(m, max_seq_len)
    console.print(f"[bold]{info['name']}[/]: {info['family']}, {info['parameters'] / 1e6:.0f} M parameters, "
                  f"{info['layers']} layers, source {info['source_format']} {info['source_quant'] or ''}")
    with _stage("reference", "eager PyTorch"):
        eager = m.generate(PROMPT, chat=True, max_new_tokens=chat_tokens)
    console.print(f"eager answer: {eager.text.strip()!r}")
    names = targets or [t.name for t in edgekit.targets()]
    runs_out: list[TargetRun] = []
    reports = []
    for name in names:
        run = TargetRun(target=name)
        runs_out.append(run)
        try:
            tgt = get_target(name)
            run.quant = pick_quant(tgt.capabilities.quant_schemes, tgt.capabilities.default_quant)
            with _stage("export + validate + bundle", tgt.name):
                t0 = time.perf_counter()
                b = bundle(m, tgt.name, out=out / "bundles", quant=run.quant, max_seq_len=max_seq_len, force=force)
                run.export_s = time.perf_counter() - t0
                run.bundle, run.validation = str(b.path), dict(b.manifest.get("validation") or {})
            console.print(f"bundle {b.path} · validation {json.dumps(run.validation, default=str)[:200]}")
            with _stage("chat", tgt.name):
                res = b.generate(PROMPT, chat=True, max_new_tokens=chat_tokens, temperature=0.0)
                run.answer = res.text.strip()
                run.eager_answer_match = res.token_ids == eager.token_ids
            console.print(f"answer: {run.answer!r} (same tokens as eager: {run.eager_answer_match})")
            if tgt.standalone_session() is None:
                run.profile_skipped = (f"{tgt.name}'s runtime does not run natively on this host; the host session is a "
                                       "correctness evaluator, so its timings would mean nothing")
                console.print(f"[yellow]profile skipped[/]: {run.profile_skipped}")
                continue
            with _stage("profile on this host", tgt.name):
                from edgekit.profile import profile
                from edgekit.profile.results import headline

                rep = profile(b.path, "local", prompt_lengths=prompt_lengths, decode_tokens=decode_tokens, runs=runs,
                              warmup=1, threads=2)
                reports.append(rep)
                rep.write_json(out / f"profile-{tgt.name}.json")
                run.profile = headline(rep.results)
        except EdgekitError as e:
            run.error = str(e)
            console.print(f"[bold red]failed[/]: {e}")
    report_path = None
    if reports:
        from edgekit.profile.html import render_html

        report_path = out / "report.html"
        report_path.write_text(render_html(reports, title=f"edgekit demo: {info['name']} on this host"))
    summary = {"model": info["name"], "eager_answer": eager.text.strip(), "targets": [r.__dict__ for r in runs_out],
               "report": str(report_path) if report_path else None, "seconds": time.perf_counter() - t_start}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _print_summary(runs_out, summary)
    return summary


def _num(d: dict[str, Any] | None, key: str) -> str:
    v = (d or {}).get(key)
    return f"{v:.1f}" if isinstance(v, (int, float)) else "-"


def _print_summary(runs: list[TargetRun], summary: dict[str, Any]) -> None:
    t = Table(title="edgekit demo")
    for col in ("target", "quant", "max |Δlogit|", "answer = eager", "decode tok/s", "ttft ms", "status"):
        t.add_column(col)
    for r in runs:
        v = r.validation.get("max_abs_logit_diff")
        t.add_row(r.target, r.quant, f"{v:.3g}" if isinstance(v, float) else "-",
                  "-" if r.eager_answer_match is None else ("yes" if r.eager_answer_match else "no"),
                  _num(r.profile, "decode_tokens_per_s") if r.profile else ("not here" if r.profile_skipped else "-"),
                  _num(r.profile, "ttft_ms") if r.profile else "-",
                  "[red]failed[/]" if r.error else "[green]ok[/]")
    console.print(t)
    for r in runs:
        if r.profile_skipped:
            console.print(f"[dim]{r.target} not profiled: {r.profile_skipped}[/]")
    console.print(f"done in {summary['seconds']:.0f} s")
    if summary["report"]:
        console.print(f"[bold]report:[/] {summary['report']}")
