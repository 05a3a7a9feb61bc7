"""Options and helpers shared by several subcommands."""
from __future__ import annotations

import click

from edgekit.consoles import make_console

console = make_console()

MODEL_ARG = click.argument("model", metavar="MODEL")
SAMPLING_OPTIONS = [
    click.option("--max-new-tokens", type=int, default=128, show_default=True),
    click.option("--temperature", type=float, default=None, help="0 = greedy (the default without a generation config)."),
    click.option("--top-k", type=int, default=None),
    click.option("--top-p", type=float, default=None),
    click.option("--seed", type=int, default=None),
]


def sampling_options(f):
    for opt in reversed(SAMPLING_OPTIONS):
        f = opt(f)
    return f


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def stream_printer(show_reasoning: bool = True):
    """A stream callback printing reasoning dimmed and the answer plainly."""
    state = {"kind": None}

    def on_piece(kind: str, text: str) -> None:
        if kind == "reasoning" and not show_reasoning:
            return
        if kind != state["kind"]:
            if state["kind"] is not None:
                console.print()
            console.print("[dim italic]thinking:[/] " if kind == "reasoning" else "[bold]answer:[/] ", end="")
            state["kind"] = kind
        console.print(text, end="", style="dim" if kind == "reasoning" else None, markup=False, highlight=False)

    return on_piece
