"""`edgekit report A.json B.json ...`: compare profile runs side by side (Markdown to stdout, HTML/MD files)."""
from __future__ import annotations

from pathlib import Path

import click

from edgekit.cli.common import console


@click.command("report")
@click.argument("reports", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--html", "html_out", type=click.Path(path_type=Path), default=None, help="Write a self-contained page.")
@click.option("--md", "md_out", type=click.Path(path_type=Path), default=None)
@click.option("--title", default="edgekit profile comparison", show_default=True)
def command(reports: tuple[Path, ...], html_out: Path | None, md_out: Path | None, title: str) -> None:
    """Compare profile reports (JSON from `edgekit profile --json`) of several devices or bundles."""
    from edgekit.profiling.html import render_html
    from edgekit.profiling.markdown import render_markdown
    from edgekit.profiling.report import ProfileReport, _write

    loaded = [ProfileReport.load(p) for p in reports]
    for path, r in zip(reports, loaded):
        _renders(path, r, render_markdown, render_html)
    md = render_markdown(loaded)
    if html_out:
        _write(html_out, render_html(loaded, title=title))
        console.print(f"[green]wrote[/] {html_out}")
    if md_out:
        _write(md_out, md)
        console.print(f"[green]wrote[/] {md_out}")
    console.print(md.split("\n## ")[0], markup=False, highlight=False)


def _renders(path: Path, report, *renderers) -> None:
    """A report that passed the schema check but still trips a renderer (a value of an unexpected shape) is named
    as the bad file, not shown as a traceback."""
    from edgekit.errors import EdgekitError

    for render in renderers:
        try:
            render([report])
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise EdgekitError(f"{path} is not a profile report edgekit can render ({type(e).__name__}: {e}); "
                               "give JSON written by `edgekit profile --json`") from None
