"""The main job end to end on the embedded default: export to every target, validate, bundle, profile, chat, report."""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from edgekit.consoles import make_console, print_table
from edgekit.errors import EdgekitError

log = logging.getLogger(__name__)
console = make_console(stderr=True)

# The first scheme a target offers from this list is the demo's default: 4-bit weights where the target has them.
QUANT_PREFERENCE = ("8da4w", "int4", "w4")
PROMPT = "What is the capital of France? Answer in one sentence."
BASE_PROMPT = "The capital of France is"  # a base model (no chat template, e.g. Gemma 3 270M) continues text


def demo_prompt(model: Any) -> tuple[str, bool]:
    """(prompt, chat): the chat question for a model with a chat template, a plain text to continue otherwise."""
    tok = model._tokenizer
    return (PROMPT, True) if tok is not None and tok.chat_template else (BASE_PROMPT, False)


class DemoStageError(EdgekitError):
    """A demo stage failed; the message names the stage and the target."""


@dataclass
class TargetRun:
    target: str
    quant: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # the target options the export was made with
    bundle: str = ""
    validation: dict[str, Any] = field(default_factory=dict)
    quality: dict[str, Any] = field(default_factory=dict)   # the export's figures on the shipped text
    export_s: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    profile: dict[str, Any] | None = None
    profile_skipped: str = ""
    answer: str = ""
    eager_answer_match: bool | None = None
    error: str = ""
    left_out: str = ""  # why the target cannot compute this model (its builder lacks a feature): not a failure


def pick_quant(caps: Any, model: Any = None) -> str:
    """A quantized checkpoint's own grids where the target holds them (faithful at the file's size), else the
    target's 4-bit scheme."""
    from edgekit.targets.base import SOURCE_SCHEME, default_quant

    if default_quant(caps, model) == SOURCE_SCHEME:
        return SOURCE_SCHEME
    return next((q for q in QUANT_PREFERENCE if q in caps.quant_schemes), caps.default_quant)


def _stage(name: str, target: str, times: dict[str, float] | None = None):
    """Wrap a stage so that any EdgekitError names it; its wall time goes into `times[name]` and the log."""

    class _Ctx:
        def __enter__(self):
            console.rule(f"[bold]{name}[/] · {target}", style="dim")
            self.t0 = time.perf_counter()
            return self

        def __exit__(self, et, ev, tb):
            dt = time.perf_counter() - self.t0
            if times is not None:
                times[name] = dt
            console.print(f"[dim]{name} · {target}: {dt:.1f} s[/]")
            log.info("demo stage %s for %s took %.1f s", name, target, dt)
            if et is not None and issubclass(et, EdgekitError) and not isinstance(ev, DemoStageError):
                raise DemoStageError(f"demo stage '{name}' for target {target!r} failed: {type(ev).__name__}: {ev}") from ev
            return False

    return _Ctx()


def default_jobs(n_targets: int) -> int:
    """Exports run in parallel worker processes, one per core (at most 2: each holds the model and an export's peak)."""
    return max(1, min(2, os.cpu_count() or 1, n_targets))


def run_demo(model: str = "smollm2-135m", out: str | Path = "demo-out", targets: list[str] | None = None,
             prompt_lengths: tuple[int, ...] = (64, 256), decode_tokens: int = 64, runs: int = 2,
             chat_tokens: int = 48, max_seq_len: int = 512, force: bool = True, jobs: int | None = None,
             stock_kernels: bool = False) -> dict[str, Any]:
    """Run every stage; returns the summary (also written to <out>/summary.json). Failures are kept per target.

    Each target exports with its quality options (a 135M model: keep its answers) and, unless stock_kernels, its
    speed options (edgekit's own kernels); where those cannot be built (no C++ compiler) it falls back to the stock
    kernels with a warning, and the summary records the options each export was made with.

    With jobs > 1 the exports (export + validate + bundle, the slow part, mostly single-threaded Python) run in that
    many worker processes while this one runs the eager reference; chat and profiling then run here one target at a
    time, so no export disturbs a timing. jobs=1 exports in this process from its already loaded model. The workers are
    spawned (each loads the model once), so a script calling this needs the `if __name__ == "__main__":` guard."""
    import edgekit
    from edgekit.model.info import model_info

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    times: dict[str, float] = {}
    with _stage("load", model, times):
        m = edgekit.load(model)
        info = model_info(m, max_seq_len)
    console.print(f"[bold]{info['name']}[/]: {info['family']}, {info['parameters'] / 1e6:.0f} M parameters, "
                  f"{info['layers']} layers, source {info['source_format']} {info['source_quant'] or ''}")
    runs_out = [TargetRun(target=name) for name in targets or [t.name for t in edgekit.targets()]]
    plan = _plan(runs_out, stock_kernels, m)
    jobs = default_jobs(len(plan)) if jobs is None else max(1, int(jobs))
    exporter = _Exports(m, model, out / "bundles", max_seq_len, force, jobs if len(plan) > 1 else 1)
    exporter.start([run for _, run in plan.values()])
    ok = False
    try:
        with _stage("reference", "eager PyTorch", times):
            prompt, chat = demo_prompt(m)
            eager = m.generate(prompt, chat=chat, max_new_tokens=chat_tokens)
        console.print(f"eager answer: {eager.text.strip()!r}")
        bundles = {}
        for run in exporter.in_completion_order([run for _, run in plan.values()]):
            try:  # the chat is not timed: it may run while other targets still export
                bundles[run.target] = b = exporter.result(run)
                _chat(b, run, eager, chat_tokens, prompt, chat)
            except EdgekitError as e:
                run.error = str(e)
                console.print(f"[bold red]failed[/]: {e}")
        reports = []
        for tgt, run in plan.values():  # every export is over: nothing else runs during a timing
            try:
                rep = _profile(bundles[run.target], tgt, run, out, prompt_lengths, decode_tokens, runs) \
                    if run.target in bundles else None
                if rep is not None:
                    reports.append(rep)
            except EdgekitError as e:
                run.error = str(e)
                console.print(f"[bold red]failed[/]: {e}")
        ok = True
    finally:
        exporter.close(abort=not ok)  # interrupted or crashed: stop the workers now rather than wait for them
    report_path = _write_report(reports, out / "report.html", info["name"])
    summary = {"model": info["name"], "eager_answer": eager.text.strip(), "targets": [r.__dict__ for r in runs_out],
               "report": str(report_path) if report_path else None, "export_jobs": exporter.jobs,
               "stage_seconds": times, "seconds": time.perf_counter() - t_start}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _print_summary(runs_out, summary)
    return summary


EXPORT_STAGE = "export + validate + bundle"
_WORKER_MODEL: Any = None


def _plan(runs: list[TargetRun], stock_kernels: bool = False, model: Any = None) -> dict[str, tuple[Any, TargetRun]]:
    """target name -> (Target, its run) with the demo's quant and options picked; an unknown name fails its run's
    export stage."""
    from edgekit.targets.base import check_features
    from edgekit.targets.registry import get_target

    plan = {}
    for run in runs:
        try:
            tgt = get_target(run.target)
        except EdgekitError as e:
            run.error = f"demo stage {EXPORT_STAGE!r} for target {run.target!r} failed: {e}"
            console.print(f"[bold red]failed[/]: {run.error}")
            continue
        try:  # a target whose graph builder cannot compute this model is left out, saying why
            if model is not None:
                check_features(tgt, model)
        except EdgekitError as e:
            run.target, run.left_out = tgt.name, str(e)
            console.print(f"[yellow]left out[/] {tgt.name}: {e}")
            continue
        try:
            caps = tgt.capabilities
            run.target, run.quant = tgt.name, pick_quant(caps, model)
            run.options = demo_options(caps, stock_kernels, run.quant)
            plan[run.target] = (tgt, run)
        except EdgekitError as e:
            run.error = f"demo stage {EXPORT_STAGE!r} for target {run.target!r} failed: {e}"
            console.print(f"[bold red]failed[/]: {run.error}")
    return plan


def demo_options(caps: Any, stock_kernels: bool = False, quant: str = "") -> dict[str, Any]:
    """The options the demo exports a target with: its quality options, then (unless stock_kernels) its speed ones;
    under quant 'source' the file fixes what the quality options would choose."""
    from edgekit.targets.base import scheme_options

    return scheme_options(caps, quant, {**dict(caps.quality_options),
                                        **({} if stock_kernels else dict(caps.speed_options))})


def _write_report(reports: list[Any], path: Path, model_name: str) -> Path | None:
    if not reports:
        return None
    from edgekit.profiling.html import render_html

    path.write_text(render_html(reports, title=f"edgekit demo: {model_name} on this host"))
    return path


def _worker_init(model: str, threads: int) -> None:
    """A worker process loads the model once and exports every target it is given from it."""
    global _WORKER_MODEL
    import torch

    import edgekit

    torch.set_num_threads(threads)  # the workers and this process share the cores
    if os.environ.get("EDGEKIT_QUIET_THIRD_PARTY") == "1":  # as the CLI does in this process: third-party chatter off
        for name in ("torch", "torchao", "executorch", "coremltools", "onnxruntime"):
            logging.getLogger(name).setLevel(logging.ERROR)
    _WORKER_MODEL = edgekit.load(model)


def _export_bundle(model: Any, target: str, out: Path, quant: str, max_seq_len: int, force: bool,
                   options: dict[str, Any], show_progress: bool | None = None) -> tuple[str, float, dict[str, Any]]:
    """Bundle `target`; returns (bundle path, seconds, the options used). Speed options whose kernels cannot be built
    here (MissingDependency: no C++ compiler) fall back to the stock kernels, with a warning."""
    from edgekit.bundling import bundle
    from edgekit.errors import MissingDependency
    from edgekit.targets.registry import get_target

    t0 = time.perf_counter()
    model = model if model is not None else _WORKER_MODEL
    speed = {k for k, _ in get_target(target).capabilities.speed_options}
    stock = {k: v for k, v in options.items() if k not in speed}

    def made_with(opts: dict[str, Any]) -> tuple[str, float, dict[str, Any]]:
        b = bundle(model, target, out=out, quant=quant, max_seq_len=max_seq_len, force=force,
                   show_progress=show_progress, **opts)
        return str(b.path), time.perf_counter() - t0, opts

    try:
        return made_with(options)
    except MissingDependency as e:
        if stock == options:
            raise
        log.warning("%s: edgekit's kernels cannot be built here (%s); exporting with the stock kernels", target, e)
        console.print(f"[yellow]{target}: edgekit's kernels cannot be built here, stock kernels instead[/]: {e}")
        return made_with(stock)


class _Exports:
    """The export stage of every target: in this process one by one (jobs=1), or in `jobs` worker processes."""

    def __init__(self, model: Any, source: str, out: Path, max_seq_len: int, force: bool, jobs: int):
        self.model, self.source, self.out, self.max_seq_len, self.force = model, source, out, max_seq_len, force
        self.jobs = jobs
        self.pool = None
        self.futures: dict[str, Any] = {}
        self.t0: dict[str, float] = {}

    def start(self, runs: list[TargetRun]) -> None:
        if self.jobs <= 1 or not runs:
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: a forked child hangs in torch's OpenMP pool once the parent has used it
        threads = max(1, (os.cpu_count() or 1) // self.jobs)
        self.pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_worker_init, initargs=(self.source, threads))
        console.print(f"exporting {', '.join(r.target for r in runs)} in {self.jobs} worker processes")
        for r in runs:
            self.t0[r.target] = time.perf_counter()
            self.futures[r.target] = self.pool.submit(_export_bundle, None, r.target, self.out, r.quant,
                                                      self.max_seq_len, self.force, r.options, False)

    def in_completion_order(self, runs: list[TargetRun]) -> Iterator[TargetRun]:
        """`runs` as their exports finish (in worker processes), or in the given order (exported on demand here)."""
        if not self.futures:
            yield from runs
            return
        from concurrent.futures import as_completed

        by_future = {self.futures[r.target]: r for r in runs if r.target in self.futures}
        yield from (by_future[f] for f in as_completed(by_future))
        yield from (r for r in runs if r.target not in self.futures)

    def result(self, run: TargetRun):
        """The opened Bundle of `run`'s target (waits for its worker); any failure names the export stage."""
        from edgekit.bundling import Bundle

        with _stage(EXPORT_STAGE, run.target, run.stage_seconds):
            if run.target in self.futures:
                try:
                    path, run.export_s, run.options = self.futures[run.target].result()
                except BrokenProcessPool as e:
                    raise DemoStageError(f"demo stage {EXPORT_STAGE!r} for target {run.target!r} failed: its worker "
                                         f"process died ({e}); see the worker's error above (out of memory? a script calling run_demo "
                                         "without an `if __name__ == '__main__':` guard?), or export in this "
                                         "process with jobs=1 (--jobs 1)") from e
            else:
                path, run.export_s, run.options = _export_bundle(self.model, run.target, self.out, run.quant,
                                                                 self.max_seq_len, self.force, run.options)
            b = Bundle.open(path)
        run.bundle, run.validation = str(b.path), dict(b.manifest.get("validation") or {})
        run.quality = dict(b.manifest.get("quality") or {})
        stages = b.manifest["artifact"]["metadata"].get("stage_seconds") or {}
        run.stage_seconds.update({f"export.{k}": v for k, v in stages.items()})
        run.stage_seconds[EXPORT_STAGE] = run.export_s  # the worker's own wall time, not the wait for it
        # soft_wrap: a long path or list stays one line in a pipe (a terminal wraps it itself); a path is not markup
        console.print(f"bundle {b.path}", soft_wrap=True, highlight=False, markup=False)
        console.print(f"  export {run.export_s:.0f} s: {', '.join(f'{k} {v:.0f} s' for k, v in stages.items())}",
                      soft_wrap=True, highlight=False, markup=False)
        console.print(f"  validation: {validation_text(run.validation)}", soft_wrap=True, highlight=False, markup=False)
        return b

    def close(self, abort: bool = False) -> None:
        if self.pool is None:
            return
        if abort:  # Python 3.11 has no public way to stop running workers (3.14's terminate_workers)
            for proc in list((getattr(self.pool, "_processes", None) or {}).values()):
                proc.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)


def validation_text(v: dict[str, Any]) -> str:
    """The export's parity figures (edgekit.validate.compare) as one readable line."""
    if "max_abs_logit_diff" not in v:
        return "not run"
    text = f"max |Δlogit| {v['max_abs_logit_diff']:.3g} (tolerance {v['tolerance']:.3g}"
    if v.get("reference_noise_floor") is not None:
        text += f", the reference's own noise {v['reference_noise_floor']:.3g}"
    text += ")"
    if "prompt_tokens" in v:
        text += f" over {v['prompt_tokens']} prompt tokens + {v.get('decode_steps', 0)} decode steps"
    agree = [f"{v[k]:.0%} with {name}" for k, name in (("top1_agreement_vs_reference", "the reference"),
                                                       ("top1_agreement_vs_fp32", "fp32")) if k in v]
    return text + (f"; same top-1 token {', '.join(agree)}" if agree else "")


def _chat(b, run: TargetRun, eager, chat_tokens: int, prompt: str, chat: bool) -> None:
    with _stage("chat", run.target, run.stage_seconds):
        res = b.generate(prompt, chat=chat, max_new_tokens=chat_tokens, temperature=0.0)
        run.answer = res.text.strip()
        run.eager_answer_match = res.token_ids == eager.token_ids
    console.print(f"answer: {run.answer!r} (same tokens as eager: {run.eager_answer_match})")


def _profile(b, tgt, run: TargetRun, out: Path, prompt_lengths: tuple[int, ...], decode_tokens: int, runs: int):
    """Profile the bundle here (the report), or record why not."""
    if tgt.standalone_session() is None:
        run.profile_skipped = (f"{tgt.name}'s runtime does not run natively on this host; the host session is a "
                               "correctness evaluator, so its timings would mean nothing")
        console.print(f"[yellow]profile skipped[/]: {run.profile_skipped}")
        return None
    with _stage("profile on this host", tgt.name, run.stage_seconds):
        from edgekit.profiling import profile
        from edgekit.profiling.results import headline

        rep = profile(b.path, "local", prompt_lengths=prompt_lengths, decode_tokens=decode_tokens, runs=runs,
                      warmup=1, threads=2)
        rep.write_json(out / f"profile-{tgt.name}.json")
        run.profile = headline(rep.results)
    return rep


def _num(d: dict[str, Any] | None, key: str) -> str:
    v = (d or {}).get(key)
    return f"{v:.1f}" if isinstance(v, (int, float)) else "-"


def _quality_cells(q: dict[str, Any]) -> tuple[str, str, str]:
    if "mean_kl" not in q:
        return "-", "-", "-"
    return (f"{q['mean_kl']:.3g}", f"{q['same_top']:.0%}",
            f"{q['perplexity']:.1f} ({q['reference_perplexity']:.1f})")


def _print_summary(runs: list[TargetRun], summary: dict[str, Any]) -> None:
    t = Table(title="edgekit demo")
    for col in ("target", "quant", "options", "max |Δlogit|", "KL vs fp32", "same top", "perplexity (fp32)",
                "answer = eager", "decode tok/s", "ttft ms", "status"):
        t.add_column(col)
    for r in runs:
        v = r.validation.get("max_abs_logit_diff")
        opts = ", ".join(f"{k}={v}" for k, v in r.options.items()) or "-"
        t.add_row(r.target, r.quant, opts, f"{v:.3g}" if isinstance(v, float) else "-", *_quality_cells(r.quality),
                  "-" if r.eager_answer_match is None else ("yes" if r.eager_answer_match else "no"),
                  _num(r.profile, "decode_tokens_per_s") if r.profile else ("not here" if r.profile_skipped else "-"),
                  _num(r.profile, "ttft_ms") if r.profile else "-",
                  "[red]failed[/]" if r.error else ("[yellow]left out[/]" if r.left_out else "[green]ok[/]"))
    print_table(console, t)
    # soft_wrap: in a pipe each of these stays one line rather than breaking at the console width mid-list
    for r in runs:
        if r.stage_seconds:
            console.print(f"[dim]{r.target} stage seconds: "
                          f"{', '.join(f'{k} {v:.1f}' for k, v in r.stage_seconds.items())}[/]", soft_wrap=True)
    console.print(f"[dim]stage seconds: {', '.join(f'{k} {v:.1f}' for k, v in summary['stage_seconds'].items())}; "
                  f"exports in {summary['export_jobs']} process(es)[/]", soft_wrap=True)
    for r in runs:
        if r.profile_skipped:
            console.print(f"[dim]{r.target} not profiled: {r.profile_skipped}[/]", soft_wrap=True)
    console.print(f"done in {summary['seconds']:.0f} s")
    if summary["report"]:
        console.print(f"[bold]report:[/] {summary['report']}")
