"""Which runner profiles a bundle on a device: the bundle's target's own runner if it has one that accepts, else the
first of edgekit's that does (llama_main for a binary, the Python runner otherwise)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from edgekit.errors import NoDeviceRunner, UnknownTarget
from edgekit.profiling.llama_main import LlamaMainRunner
from edgekit.profiling.python_runner import PythonRunner
from edgekit.targets.registry import get_target

if TYPE_CHECKING:
    from pathlib import Path

    from edgekit.profiling.bundles import BundleRef
    from edgekit.profiling.devices import Device
    from edgekit.profiling.runner_protocol import Runner

log = logging.getLogger("edgekit.profile")
BUILTIN: tuple[Runner, ...] = (LlamaMainRunner(), PythonRunner())


def select_runner(device: Device, ref: BundleRef, runner_path: Path | None) -> Runner:
    """The runner for this device and --runner; NoDeviceRunner naming both and what every runner accepts."""
    candidates = (*target_runners(ref), *BUILTIN)
    for runner in candidates:
        if runner.accepts(device, runner_path):
            return runner
    given = f"--runner {runner_path}" if runner_path is not None else "no --runner"
    accepted = "; ".join(f"{r.name}: {r.accepted}" for r in candidates)
    raise NoDeviceRunner(f"{device.uri}: no device runner profiles a {device.kind} device with {given}. "
                         f"Accepted: {accepted}")


def target_runners(ref: BundleRef) -> tuple[Runner, ...]:
    """The runner the bundle's target supplies through an optional `device_runner()`, when that target is installed
    here (a bundle can be profiled remotely without its plugin: then edgekit's runners are the choice)."""
    try:
        target = get_target(ref.target)
    except UnknownTarget as e:
        log.debug("no target runner for %s: %s", ref.path, e)
        return ()
    supply = getattr(target, "device_runner", None)
    runner = supply() if supply is not None else None
    return (runner,) if runner is not None else ()
