"""Run the measurement on a device: in this process (local), or through a device runner that pushes the bundle and
measures there (ssh, adb, ios: runner_select.py picks it)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import DeviceError
from edgekit.profiling.bundles import load_session_module, shipped_session, standalone_module
from edgekit.profiling.collected import Collected
from edgekit.profiling.devices import CommandTimeout
from edgekit.profiling.runner_protocol import RunnerOptions
from edgekit.profiling.runner_select import select_runner
from edgekit.profiling.runner_settings import runner_settings

if TYPE_CHECKING:
    from edgekit.profiling.bundles import BundleRef
    from edgekit.profiling.collected import EventFn
    from edgekit.profiling.devices import Device
    from edgekit.profiling.settings import Settings


def run_local(ref: BundleRef, settings: Settings, session_module: str | None, on_event: EventFn | None) -> Collected:
    """In this process, through ONE standalone session module for every timed and per-op run: `session_module`
    (the user's), else the bundle's own hashed copy (checked again as it is imported), else the installed target's.
    Only a target with no standalone session at all is timed through its host Session (Target.session)."""
    from edgekit.profiling.runner import measure

    module, source = _load_standalone(ref, session_module)
    got = Collected(runner={"kind": "in-process", "session": source})

    def open_session(profile_dir: str | None = None) -> Any:
        if module is not None:
            return module.open_session(str(ref.path), threads=settings.threads, profile_dir=profile_dir)
        if profile_dir is None and ref.opened is not None and settings.threads is None:
            return ref.opened.session()
        raise DeviceError("no standalone session for this target: per-op profiling and --threads unavailable")

    if ref.kind == "artifact" and module is None:
        raise DeviceError(f"{ref.path} is an artifact folder whose target has no standalone session; bundle it first")
    try:
        measure(open_session, runner_settings(ref, settings), lambda e: got.add(e, on_event),
                vocab_size=_vocab(ref.manifest))
    except DeviceError as e:
        got.error = e
    except TimeoutError as e:   # the runner's own deadline: the only timeout an in-process run has
        runs = len([x for x in got.events if x.get("event") == "run"])
        got.error = CommandTimeout(f"local: {e} — {runs} measurement(s) finished before that are kept in the report")
    return got


def _load_standalone(ref: BundleRef, override: str | None) -> tuple[Any, str]:
    """(module or None, what it is: 'session module <path>' / 'bundle <file> (sha256-checked)' / 'target <path>' /
    'target Session')."""
    try:
        path = standalone_module(ref, override)
    except DeviceError:
        return None, "target Session"
    shipped = None if override else shipped_session(ref)
    source = (f"session module {path}" if override else f"bundle {shipped} (sha256-checked)" if shipped
              else f"target {path}")
    return load_session_module(ref, override), source


def _vocab(manifest: dict[str, Any]) -> int | None:
    return (manifest.get("model") or {}).get("vocab_size") or (manifest.get("metadata") or {}).get("vocab_size")


def run_remote(device: Device, ref: BundleRef, settings: Settings, runner: str | None, python: str | None,
               session_module: str | None, on_event: EventFn | None, keep: bool = False) -> Collected:
    """On the device, through the runner select_runner picks for it and `runner` (the user's --runner)."""
    options = RunnerOptions(Path(runner).expanduser() if runner else None, python, session_module, keep)
    return select_runner(device, ref, options.runner_path).run(device, ref, settings, options, on_event)
