"""A rich progress bar over evaluation windows on a terminal (nothing otherwise, nor inside an export's spinner)."""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def window_bar(title: str, show: bool | None) -> Iterator[Callable[[int, int], None]]:
    from edgekit import progress

    if show is None:
        show = sys.stderr.isatty() and progress.current().current is None   # an export's stage shows its own
    if not show:
        yield lambda done, total: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("[bold]{task.description}[/]"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("windows"), TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(title, total=None)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield tick
