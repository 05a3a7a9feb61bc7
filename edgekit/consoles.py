"""The rich consoles edgekit prints through: a terminal's own width, and in a pipe or CI log a width wide enough for
the widest table edgekit prints (rich's default there is 80 columns, which cuts table cells to 'execut…')."""
from __future__ import annotations

import os
import sys

from rich.console import Console

PIPE_WIDTH = 200   # the demo's summary table, the widest edgekit prints, needs about 170


def make_console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    tty = hasattr(stream, "isatty") and stream.isatty()
    width = None if tty or os.environ.get("COLUMNS") else PIPE_WIDTH
    return Console(stderr=stderr, width=width)
