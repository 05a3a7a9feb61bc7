"""What a device run produced: the runner's events as they arrived, facts about the runner, and the error if any."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgekit.errors import DeviceError

EventFn = Callable[[dict[str, Any]], None]


@dataclass
class Collected:
    """What a device run produced, complete or not."""

    events: list[dict[str, Any]] = field(default_factory=list)
    runner: dict[str, Any] = field(default_factory=dict)
    error: DeviceError | None = None

    def add(self, event: dict[str, Any], on_event: EventFn | None) -> None:
        self.events.append(event)
        if on_event is not None:
            on_event(event)

    @property
    def complete(self) -> bool:
        """Done, with no error and nothing skipped (a skipped prompt length is a measurement that was asked for)."""
        return (self.error is None and any(e.get("event") == "done" for e in self.events)
                and not any(e.get("event") == "skip" for e in self.events))
