from __future__ import annotations

import click

from edgekit.cli.common import console


@click.command("eval")
@click.argument("path", metavar="ARTIFACT|BUNDLE", type=click.Path())
@click.option("--text", "text_file", type=click.Path(dir_okay=False), default=None,
              help="A UTF-8 text file to evaluate on (default: edgekit's shipped eval set).")
@click.option("--reference", default=None, metavar="CHECKPOINT",
              help="The unquantized model (default: the checkpoint the export recorded).")
@click.option("--max-tokens", type=int, default=None, help="Score at most this many tokens (spread over the text).")
@click.option("--worst", type=int, default=3, show_default=True, help="How many worst windows to show.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (for CI).")
def command(path, text_file, reference, max_tokens, worst, as_json) -> None:
    """Measure an artifact or bundle in its own runtime against the unquantized model: mean KL per token, same top
    token, perplexity of both, the worst windows."""
    import json
    from pathlib import Path

    from edgekit.quality.evaluate import evaluate

    report = evaluate(path, reference=reference, text=Path(text_file) if text_file else None, max_tokens=max_tokens,
                      worst=worst, show_progress=None if not as_json else False)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    _print(report)


def _print(report) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"quality of {report.target} ({report.quant}) on {report.runtime}")
    t.add_column("figure")
    t.add_column("value", justify="right")
    for name, value in (("mean KL per token (nats)", f"{report.mean_kl:.4g}"),
                        ("same top token", f"{report.same_top:.1%}"),
                        ("perplexity", f"{report.perplexity:.2f}"),
                        ("reference perplexity (fp32)", f"{report.reference_perplexity:.2f}"),
                        ("max KL of one token", f"{report.max_kl:.3g}"),
                        ("tokens scored", f"{report.tokens} in {report.windows} windows of {report.window_tokens}"),
                        ("text", f"{report.text_id} (sha256 {report.text_sha256[:12]})"),
                        ("reference", report.reference),
                        ("seconds", f"{report.seconds:.1f}")):
        t.add_row(name, escape(value))
    console.print(t)
    if report.worst:
        w = Table(title="worst windows")
        for col in ("first token", "tokens", "mean KL", "same top", "text"):
            w.add_column(col, overflow="fold")
        for x in report.worst:
            w.add_row(str(x.start), str(x.tokens), f"{x.mean_kl:.3g}", f"{x.same_top:.0%}", escape(x.text))
        console.print(w)
