"""The rich consoles edgekit prints through: a terminal's own width, and in a pipe or CI log a width wide enough for
the widest table edgekit prints (rich's default there is 80 columns, which cuts table cells to 'execut…')."""
from __future__ import annotations

import os
import sys
from typing import Any

from rich.console import Console

PIPE_WIDTH = 200   # the demo's summary table, the widest edgekit prints, needs about 170


def make_console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    tty = hasattr(stream, "isatty") and stream.isatty()
    width = None if tty or os.environ.get("COLUMNS") else PIPE_WIDTH
    return Console(stderr=stderr, width=width)


def print_table(console: Console, table: Any) -> None:
    """A rich Table at its own width in a pipe or CI log, so no cell is wrapped to fit the console width there (a
    wrapped cell reads as two rows); in a terminal, the terminal's width as usual."""
    if console.is_terminal:
        console.print(table)
        return
    from rich.measure import Measurement

    need = Measurement.get(console, console.options.update_width(10_000), table).maximum
    width = console.width
    console.width = max(width, need)   # print(width=...) is capped at the console's width, so widen it for this
    try:
        console.print(table, crop=False)
    finally:
        console.width = width
