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
    click.option("--speculate", type=click.Choice(["ngram", "off"]), default=None,
                 help="Draft from the text so far and verify several tokens per forward where this runtime's measured "
                      "costs say it pays (default ngram); off: one token per forward."),
    click.option("--draft-tokens", type=click.IntRange(1, 8), default=None,
                 help="With --speculate ngram: always draft this many tokens (default: chosen per step)."),
]


def generation_summary(res) -> str:
    """The dim line after a generation: length, stop reason, speeds, and what speculation did."""
    line = (f"{len(res.token_ids)} tokens, stop: {res.stop_reason}, ttft {res.time_to_first_token_s * 1000:.0f} ms, "
            f"prefill {res.prefill_tokens_per_s:.1f} tok/s, decode {res.decode_tokens_per_s:.1f} tok/s")
    spec = res.speculation or {}
    if spec.get("mode") == "ngram" and not spec.get("reason"):
        rate = spec.get("acceptance_rate")
        line += (f", {spec.get('tokens_per_forward') or 1.0:.2f} tokens/forward"
                 + (f" ({spec['accepted']}/{spec['drafted']} drafted tokens kept)" if rate is not None else ""))
    elif spec.get("mode") == "ngram":
        line += f", no speculation: {spec['reason']}"
    return line


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
