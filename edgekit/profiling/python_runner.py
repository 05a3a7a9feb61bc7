"""edgekit's Python runner on a device: runner.py, the standalone session and the speculation module are pushed with
the bundle and run by the device's own python (ssh boards; a phone or other device that has python, numpy and the
runtime)."""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit.errors import DeviceError
from edgekit.profiling.bundles import standalone_module
from edgekit.profiling.collected import Collected
from edgekit.profiling.devices import CommandTimeout
from edgekit.profiling.remote import check_storage, cleanup, remote_root
from edgekit.profiling.runner_settings import runner_settings
from edgekit.runtime import speculate

if TYPE_CHECKING:
    from edgekit.profiling.bundles import BundleRef
    from edgekit.profiling.collected import EventFn
    from edgekit.profiling.devices import Device
    from edgekit.profiling.runner_protocol import RunnerOptions
    from edgekit.profiling.settings import Settings

log = logging.getLogger("edgekit.profile")
RUNNER_FILE = Path(__file__).with_name("runner.py")
SPECULATE_FILE = Path(speculate.SOURCE_FILE)


class PythonRunner:
    name = "edgekit-python"
    accepted = ("edgekit's Python runner: no --runner (any device but adb://, whose phones have no python of ours), "
                "or a .py runner file; run by the device's python (python=)")

    def accepts(self, device: Device, runner_path: Path | None) -> bool:
        if runner_path is None:
            return device.kind != "adb"
        return runner_path.suffix == ".py"

    def run(self, device: Device, ref: BundleRef, settings: Settings, options: RunnerOptions,
            on_event: EventFn | None) -> Collected:
        """Push bundle + runner to the device's workdir, run there, stream events back, pull the events file."""
        timeout = settings.timeout_s
        module = standalone_module(ref, options.session_module)
        root = remote_root(device)
        got = Collected(runner={"kind": "edgekit-runner", "session_module": module.name, "remote_dir": root})
        needed = ref.bytes() + RUNNER_FILE.stat().st_size + module.stat().st_size + SPECULATE_FILE.stat().st_size
        got.runner["storage"] = check_storage(device, device.workdir(), needed, timeout)
        python = options.python or device.options.get("python") or "python3"
        with tempfile.TemporaryDirectory(prefix="edgekit-runner-") as tmp:
            stage = _stage(Path(tmp), ref, settings, module, options.runner_path)
            try:
                device.run(["mkdir", "-p", root], timeout=min(timeout, 60)).check(f"{device.uri}: mkdir {root}")
                device.push(stage, f"{root}/runner", timeout)
                device.push(ref.path, f"{root}/bundle", timeout)
                _run_runner(device, root, settings, python, got, on_event)
                if got.error is None:
                    _pull_events(device, root, got, Path(tmp), timeout)
            except DeviceError as e:
                got.error = e
            finally:
                if not options.keep:
                    cleanup(device, root)
        return got


def _stage(tmp: Path, ref: BundleRef, settings: Settings, module: Path, runner_path: Path | None) -> Path:
    """The runner folder to push: the runner, the session module, speculation, and the settings file."""
    stage = tmp / "runner"
    stage.mkdir()
    shutil.copy2(runner_path or RUNNER_FILE, stage / "edgekit_runner.py")
    shutil.copy2(module, stage / "standalone_session.py")
    shutil.copy2(SPECULATE_FILE, stage / speculate.SHIPPED_AS)
    # a file, not the command line: the prompts' token ids would pass what a phone's shell takes in one line
    (stage / "settings.json").write_text(json.dumps(runner_settings(ref, settings)))
    return stage


def _run_runner(device: Device, root: str, settings: Settings, python: str, got: Collected,
                on_event: EventFn | None) -> None:
    pidfile = f"{root}/runner.pid"
    # the device's shell records the runner's pid, so a timed-out runner can be stopped there too
    argv = ["sh", "-c", 'echo $$ > "$1"; shift; exec "$@"', "sh", pidfile,
            python, f"{root}/runner/edgekit_runner.py", "--folder", f"{root}/bundle",
            "--settings", f"@{root}/runner/settings.json", "--out", f"{root}/events.jsonl"]

    def line(text: str) -> None:
        if text.startswith("{"):
            try:
                event = json.loads(text)
            except json.JSONDecodeError:
                return
            if event.get("event") == "start":
                got.runner["remote_facts"] = event.get("facts", {})
            got.add(event, on_event)
        elif text.strip():
            log.debug("%s runner: %s", device.uri, text)

    try:
        res = device.run(argv, timeout=settings.timeout_s, on_line=line)
    except DeviceError as e:
        if isinstance(e, CommandTimeout):
            _stop_remote(device, pidfile)
        got.error = type(e)(f"{e} — {len([x for x in got.events if x.get('event') == 'run'])} measurement(s) "
                            "received before that are kept in the report")
        return
    errors = [e["error"] for e in got.events if e.get("event") == "error"]
    if res.returncode != 0 or errors:
        detail = errors[0] if errors else (res.stderr or res.stdout).strip()[-500:]
        got.error = DeviceError(f"{device.uri}: the runner failed (exit {res.returncode}): {detail}")


def _stop_remote(device: Device, pidfile: str) -> None:
    try:
        device.run(["sh", "-c", 'kill "$(cat "$1")"', "sh", pidfile], timeout=30)
    except DeviceError as e:
        log.warning("%s: could not stop the timed-out runner: %s", device.uri, e)


def _pull_events(device: Device, root: str, got: Collected, tmp: Path, timeout: float) -> None:
    """The events file written on the device is the record; stdout was the live view of it."""
    local = tmp / "events.jsonl"
    device.pull(f"{root}/events.jsonl", local, timeout)
    pulled = [json.loads(ln) for ln in local.read_text().splitlines() if ln.strip()]
    if len(pulled) >= len(got.events):
        got.events = pulled
    got.runner["events_pulled"] = len(pulled)
