"""`edgekit profile BUNDLE --device URI`: latency, throughput and memory of a bundle on a device."""
from __future__ import annotations

from pathlib import Path

import click

from edgekit.cli.common import console


def _lengths(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected comma-separated integers, e.g. 64,256,1024") from None
    if not out or min(out) < 1:
        raise click.BadParameter(f"{value!r}: expected positive integers, e.g. 64,256,1024")
    return out


@click.command("profile")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--device", "-d", default="local", show_default=True,
              help="local | ssh://user@host[:port] | adb://SERIAL | adb:// | ios://UDID | a name from devices.toml")
@click.option("--prompt-lengths", default="64,256,1024", show_default=True, callback=_lengths)
@click.option("--decode-tokens", type=int, default=128, show_default=True)
@click.option("--runs", type=int, default=3, show_default=True, help="Timed runs per prompt length.")
@click.option("--warmup", type=int, default=1, show_default=True, help="Warm-up runs per prompt length (excluded).")
@click.option("--threads", type=int, default=None, help="Runtime threads (default: the runtime's choice).")
@click.option("--speculate", type=click.Choice(["ngram", "off"]), default="ngram", show_default=True,
              help="After the timed runs, decode edgekit's shipped prompts with and without speculative decoding "
                   "(bundles that return every position's logits: edgekit bundle --all-logits).")
@click.option("--runner", default=None, help="adb: your llama_main build; ios: the profiling app's bundle id.")
@click.option("--python", "python", default=None, help="ssh/adb: the device's python (default python3).")
@click.option("--accept-new-host-key", is_flag=True, help="ssh: trust an unknown host key on first use.")
@click.option("--identity-file", default=None, help="ssh: private key to use (default: agent / ssh config).")
@click.option("--timeout", type=float, default=1800.0, show_default=True, help="Seconds the run may take: a "
              "device command is killed then; on local the run stops at the next forward call. Finished "
              "measurements are kept (partial report, exit 2).")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None)
@click.option("--html", "html_out", type=click.Path(path_type=Path), default=None)
@click.option("--md", "md_out", type=click.Path(path_type=Path), default=None)
@click.option("--compare-last", is_flag=True, help="Flag regressions vs the last run (same bundle, device, settings).")
@click.option("--threshold", type=float, default=0.10, show_default=True, help="Regression threshold (0.10 = 10%).")
@click.option("--no-history", is_flag=True, help="Do not store this run in the history.")
@click.option("--session-module", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Advanced: a standalone_session.py to run the bundle with instead of its target's.")
def command(bundle: Path, device: str, prompt_lengths: tuple[int, ...], decode_tokens: int, runs: int, warmup: int,
            threads: int | None, speculate: str, runner: str | None, python: str | None, accept_new_host_key: bool,
            identity_file: str | None, timeout: float, json_out: Path | None, html_out: Path | None,
            md_out: Path | None, compare_last: bool, threshold: float, no_history: bool,
            session_module: str | None) -> None:
    """Profile BUNDLE on a device: load time, time to first token, prefill and decode tokens/s, peak RSS, top ops."""
    from edgekit import profiling

    def on_event(e: dict) -> None:
        if e.get("event") == "run":
            tag = "warm-up" if e["warmup"] else "run"
            rate = len(e["decode_ms"]) * 1000.0 / max(sum(e["decode_ms"]), 1e-9)
            console.print(f"[dim]{tag} {e['index']}[/] prompt {e['prompt_length']}: prefill {e['prefill_ms']:.1f} "
                          f"ms, decode {rate:.1f} tok/s", highlight=False)
        elif e.get("event") == "speculation" and e.get("available"):
            console.print(f"[dim]speculation[/] {e['kind']} {e['prompt']}: {e['plain_decode_tok_s'] or 0:.1f} -> "
                          f"{e['decode_tok_s'] or 0:.1f} tok/s, {e['tokens_per_forward'] or 1:.2f} tokens/forward",
                          highlight=False)

    extra = {"accept_new_host_key": True if accept_new_host_key else None, "identity_file": identity_file}
    interrupted = None
    try:
        report = profiling.profile(bundle, device, prompt_lengths=prompt_lengths, decode_tokens=decode_tokens,
                                   runs=runs, warmup=warmup, threads=threads, speculate=speculate, runner=runner,
                                   python=python,
                                   timeout=timeout, history=not no_history, compare_last=compare_last,
                                   threshold=threshold, on_event=on_event, session_module=session_module, **extra)
    except profiling.ProfileInterrupted as e:
        interrupted, report = e, e.report
    _write_outputs(report, json_out, html_out, md_out)
    console.print(report.to_markdown().split("\n## ")[0], markup=False, highlight=False)
    if report.regressions:
        console.print(f"[bold red]{len(report.regressions)} regression(s)[/] beyond {threshold:.0%} vs the last run")
    if interrupted is not None:
        raise interrupted
    if report.regressions:
        raise SystemExit(3)


def _write_outputs(report, json_out: Path | None, html_out: Path | None, md_out: Path | None) -> None:
    """The measurements first (JSON, then Markdown), the charts last; a failed output does not stop the others,
    then the first failure is raised (exit code 2). A failed history step was logged as a warning already."""
    from edgekit.errors import EdgekitError

    failed: list[EdgekitError] = []
    for path, write in ((json_out, report.write_json), (md_out, report.write_markdown), (html_out, report.write_html)):
        if path is None:
            continue
        try:
            write(path)
        except EdgekitError as e:
            failed.append(e)
            continue
        console.print(f"[green]wrote[/] {path}")
    if failed:
        raise failed[0]
