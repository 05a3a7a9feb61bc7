"""What a device runner is: something that, given a device and a verified bundle, pushes what it needs, measures,
and returns what it collected. edgekit ships two (python_runner.py, llama_main.py); a target may add its own through
an optional `Target.device_runner()` (see runner_select.py)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from edgekit.profiling.bundles import BundleRef
    from edgekit.profiling.collected import Collected, EventFn
    from edgekit.profiling.devices import Device
    from edgekit.profiling.settings import Settings


@dataclass(frozen=True)
class RunnerOptions:
    """The user's choices for one remote run beyond the measurement settings."""

    runner_path: Path | None = None     # --runner / runner= in devices.toml
    python: str | None = None           # the device's python, for runners that need one
    session_module: str | None = None   # --session-module: the standalone session to push instead of the bundle's
    keep: bool = False                  # leave the pushed folder on the device


@runtime_checkable
class Runner(Protocol):
    name: str       # recorded nowhere but in messages: the report's runner.kind is the runner's own
    accepted: str   # what it runs with, for the message when no runner accepts what was given

    def accepts(self, device: Device, runner_path: Path | None) -> bool:
        """Whether this runner can profile on `device` with the user's `runner_path` (None: none was given)."""
        ...

    def run(self, device: Device, ref: BundleRef, settings: Settings, options: RunnerOptions,
            on_event: EventFn | None) -> Collected:
        """Measure; a DeviceError before anything ran is raised, one during the run goes to Collected.error."""
        ...
