from __future__ import annotations

import sys

import click


@click.command("demo")
@click.option("--model", default="smollm2-135m", show_default=True, help="Model to run the demo on.")
@click.option("--out", "-o", default="demo-out", show_default=True, type=click.Path())
@click.option("--targets", default=None, help="Comma-separated targets (default: every installed one).")
@click.option("--quick", is_flag=True, help="Fewer tokens and shorter prompts (for tests).")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
              help="Worker processes for the exports (default: one per core, at most 2; 1 exports in this process).")
@click.option("--stock-kernels", is_flag=True,
              help="Export with each runtime's stock kernels, not edgekit's own (its speed options: see `edgekit targets`).")
def command(model: str, out: str, targets: str | None, quick: bool, jobs: int | None, stock_kernels: bool) -> None:
    """The main job: export MODEL to every target, validate, bundle, profile here, chat, write the HTML report."""
    from edgekit.demo import run_demo

    kwargs = {"prompt_lengths": (32,), "decode_tokens": 16, "runs": 1, "chat_tokens": 16} if quick else {}
    summary = run_demo(model, out, targets.split(",") if targets else None, jobs=jobs,
                       stock_kernels=stock_kernels, **kwargs)
    if any(t["error"] for t in summary["targets"]):
        sys.exit(1)
