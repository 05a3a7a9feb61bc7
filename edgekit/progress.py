"""Named, timed stages with a rich progress display; targets report capture/quantize/lower/serialize/validate."""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator

log = logging.getLogger("edgekit")


class Stages:
    """Collects {stage: seconds}; shows a spinner per stage on a terminal, logs otherwise."""

    def __init__(self, title: str, show: bool | None = None):
        self.title = title
        self.timings: dict[str, float] = {}
        self.show = sys.stderr.isatty() if show is None else show
        self.current: str | None = None

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.current = name
        t0 = time.perf_counter()
        status = None
        if self.show:
            from rich.console import Console

            status = Console(stderr=True).status(f"[bold]{self.title}[/]: {name} ...")
            status.start()
        try:
            yield
        finally:
            if status is not None:
                status.stop()
            dt = time.perf_counter() - t0
            self.timings[name] = self.timings.get(name, 0.0) + dt
            log.info("%s: %s took %.1f s", self.title, name, dt)
            if self.show:
                from rich.console import Console

                Console(stderr=True).print(f"[green]✓[/] {self.title}: {name} [dim]{dt:.1f} s[/]")
            self.current = None


_ACTIVE: list[Stages] = []


def current() -> Stages:
    """The Stages of the export under way (a silent one outside an export), so targets need not thread it through."""
    return _ACTIVE[-1] if _ACTIVE else Stages("edgekit", show=False)


@contextlib.contextmanager
def activate(stages: Stages) -> Iterator[Stages]:
    _ACTIVE.append(stages)
    try:
        yield stages
    finally:
        _ACTIVE.pop()
