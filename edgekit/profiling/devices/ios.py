"""iPhones and iPads through `xcrun devicectl` (Xcode 15+ on macOS); elsewhere a clear DeviceError.

Profiling on iOS needs an app on the phone to host the runtime (no process runs outside an app there): the user's
build of a profiling app, named by its bundle identifier with `runner=`. The bundle is copied into that app's data
container, the app is launched with the settings, and it must write `edgekit-profile.jsonl` (the runner's events)
into its Documents folder.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.errors import DeviceError
from edgekit.profiling.devices.base import CommandResult, Device, DeviceInfo, run_process


def _require_devicectl() -> str:
    if sys.platform != "darwin":
        raise DeviceError(f"ios:// devices need macOS with Xcode 15+ (`xcrun devicectl`); this host is {sys.platform}")
    xcrun = shutil.which("xcrun")
    if not xcrun:
        raise DeviceError("xcrun was not found; install Xcode 15+ and run `xcode-select --install`")
    return xcrun


def _devicectl_json(args: list[str], timeout: float = 60) -> dict[str, Any]:
    xcrun = _require_devicectl()
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "out.json"
        res = run_process([xcrun, "devicectl", *args, "--json-output", str(out)], timeout, what="xcrun devicectl")
        if res.returncode != 0 or not out.exists():
            raise DeviceError(f"xcrun devicectl {args[0]} failed: {(res.stderr or res.stdout).strip()[-300:]}")
        return json.loads(out.read_text())


class IosDevice(Device):
    """ios://UDID. Options: runner (the profiling app's bundle identifier)."""

    kind = "ios"

    def __init__(self, uri: str, **options: Any):
        super().__init__(uri, **options)
        self.udid = uri[len("ios://"):].strip("/")
        _require_devicectl()
        if not self.udid:
            raise DeviceError("ios:// needs a device identifier: ios://UDID (see `edgekit devices`)")

    def _app(self) -> str:
        app = self.options.get("runner")
        if not app:
            raise DeviceError(f"{self.uri}: profiling on iOS needs a profiling app installed on the phone; give its "
                              "bundle identifier with --runner (or runner= in devices.toml)")
        return str(app)

    def facts(self) -> dict[str, Any]:
        doc = _devicectl_json(["device", "info", "details", "--device", self.udid])
        info = doc.get("result", {})
        hw, dev = info.get("hardwareProperties", {}), info.get("deviceProperties", {})
        return {"os": f"iOS {dev.get('osVersionNumber', '?')}", "model": hw.get("marketingName"),
                "soc": (hw.get("cpuType") or {}).get("name"), "arch": hw.get("platform"), "udid": self.udid}

    def push(self, local: Path, remote: str, timeout: float) -> None:
        self._devicectl(["device", "copy", "to", "--device", self.udid, "--domain-type", "appDataContainer",
                         "--domain-identifier", self._app(), "--source", str(local), "--destination", remote], timeout)

    def pull(self, remote: str, local: Path, timeout: float) -> None:
        self._devicectl(["device", "copy", "from", "--device", self.udid, "--domain-type", "appDataContainer",
                         "--domain-identifier", self._app(), "--source", remote, "--destination", str(local)],
                        timeout)

    def run(self, argv: list[str], timeout: float, on_line: Callable[[str], None] | None = None) -> CommandResult:
        return self._devicectl(["device", "process", "launch", "--device", self.udid, "--terminate-existing",
                                "--console", self._app(), *argv], timeout, on_line)

    def _devicectl(self, args: list[str], timeout: float, on_line: Callable[[str], None] | None = None
                   ) -> CommandResult:
        res = run_process([_require_devicectl(), "devicectl", *args], timeout, on_line, what="xcrun devicectl")
        return res.check(f"{self.uri}: devicectl {' '.join(args[:3])}")

    def workdir(self) -> str:
        return "Documents"

    def free_bytes(self, path: str, timeout: float = 30) -> int | None:
        return None  # devicectl reports no free space per app container


def list_ios_devices() -> list[DeviceInfo]:
    if sys.platform != "darwin" or not shutil.which("xcrun"):
        return []
    try:
        doc = _devicectl_json(["list", "devices"])
    except DeviceError:
        return []
    out = []
    for d in doc.get("result", {}).get("devices", []):
        hw, dev = d.get("hardwareProperties", {}), d.get("deviceProperties", {})
        udid = hw.get("udid") or d.get("identifier")
        facts = {"os": f"{hw.get('platform', 'iOS')} {dev.get('osVersionNumber', '?')}",
                 "model": hw.get("marketingName"), "soc": (hw.get("cpuType") or {}).get("name")}
        state = (d.get("connectionProperties") or {}).get("tunnelState", "")
        out.append(DeviceInfo(f"ios://{udid}", "ios", dev.get("name") or udid, state != "unavailable",
                              {k: v for k, v in facts.items() if v}))
    return out
