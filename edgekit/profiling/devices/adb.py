"""Android phones through the `adb` client (argument lists; the phone's shell gets shlex-quoted arguments).

`adb shell` without the shell_v2 feature always exits 0, so every command ends with `echo @@rc=$?` and the exit
status is read from there; a missing marker means the phone dropped off mid-command.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.errors import DeviceError
from edgekit.profiling.devices.base import (
    FACTS_SCRIPT,
    RUNTIME_PROBE,
    CommandResult,
    Device,
    DeviceInfo,
    parse_facts,
    run_process,
)

RC_MARKER = "@@rc="
DEFAULT_WORKDIR = "/data/local/tmp"


def adb_binary(options: dict[str, Any] | None = None) -> str:
    exe = (options or {}).get("adb") or os.environ.get("EDGEKIT_ADB") or "adb"
    found = shutil.which(exe)
    if not found:
        raise DeviceError(f"the adb client ({exe!r}) is not installed or not on PATH; install Android platform-tools "
                          "(Debian: apt-get install adb)")
    return found


def list_serials(adb: str, timeout: float = 20) -> list[dict[str, str]]:
    """`adb devices -l` parsed: [{serial, state, model, product, device, transport_id}]."""
    res = run_process([adb, "devices", "-l"], timeout, what="adb devices")
    rows = []
    for line in res.stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 2 or line.startswith("*"):
            continue
        row = {"serial": parts[0], "state": parts[1]}
        row.update(p.split(":", 1) for p in parts[2:] if ":" in p)
        rows.append(row)
    return rows


class AdbDevice(Device):
    """adb://SERIAL, or adb:// for the only attached device. Options: adb, runner, python, workdir."""

    kind = "adb"

    def __init__(self, uri: str, **options: Any):
        super().__init__(uri, **options)
        if not uri.startswith("adb://"):
            raise DeviceError(f"not an adb device URI: {uri!r}; expected adb://SERIAL or adb://")
        self.adb = adb_binary(options)
        self.serial = uri[len("adb://"):].strip("/") or self._only_device()

    def _only_device(self) -> str:
        ready = [r["serial"] for r in list_serials(self.adb) if r["state"] == "device"]
        if len(ready) != 1:
            raise DeviceError(f"adb:// needs exactly one attached device; found {len(ready)}: "
                              f"{', '.join(ready) or 'none'} (name one with adb://SERIAL)")
        return ready[0]

    def workdir(self) -> str:
        return str(self.options.get("workdir") or DEFAULT_WORKDIR)

    def _adb(self, *args: str) -> list[str]:
        return [self.adb, "-s", self.serial, *args]

    def run(self, argv: list[str], timeout: float, on_line: Callable[[str], None] | None = None) -> CommandResult:
        marker_seen: dict[str, int] = {}

        def line(text: str) -> None:
            if text.startswith(RC_MARKER) and text[len(RC_MARKER):].strip().isdigit():
                marker_seen["rc"] = int(text[len(RC_MARKER):])
            elif on_line is not None:
                on_line(text)

        command = f"{shlex.join(argv)} 2>&1; echo {RC_MARKER}$?"
        res = run_process(self._adb("shell", command), timeout, line, what=f"{self.uri}: {argv[0]}")
        out = "\n".join(ln for ln in res.stdout.splitlines() if not ln.startswith(RC_MARKER))
        if "rc" not in marker_seen:
            raise DeviceError(f"{self.uri}: the device dropped off while running {argv[0]} "
                              f"(adb exit {res.returncode}: {(res.stderr or out).strip()[-300:] or 'no output'})")
        return CommandResult(argv, marker_seen["rc"], out, res.stderr, res.seconds)

    def push(self, local: Path, remote: str, timeout: float) -> None:
        res = run_process(self._adb("push", str(local), remote), timeout, what=f"adb push {local.name}")
        if res.returncode != 0:
            raise DeviceError(f"{self.uri}: adb push {local.name} -> {remote} failed: "
                              f"{(res.stderr or res.stdout).strip()[-300:]}")

    def pull(self, remote: str, local: Path, timeout: float) -> None:
        res = run_process(self._adb("pull", remote, str(local)), timeout, what=f"adb pull {remote}")
        if res.returncode != 0:
            raise DeviceError(f"{self.uri}: adb pull {remote} failed: {(res.stderr or res.stdout).strip()[-300:]}")

    def facts(self) -> dict[str, Any]:
        res = self.run(["sh", "-c", FACTS_SCRIPT], timeout=30)
        facts = parse_facts(res.stdout)
        facts["serial"] = self.serial
        if self.options.get("python"):
            probe = self.run([str(self.options["python"]), "-c", RUNTIME_PROBE], timeout=60)
            found = re.findall(r"^\{.*\}$", probe.stdout, re.MULTILINE)
            facts["runtimes"] = json.loads(found[-1]) if probe.returncode == 0 and found else None
        runner = self.options.get("runner")
        facts["runner"] = Path(runner).name if runner else None
        return facts


def list_adb_devices(timeout: float = 20) -> list[DeviceInfo]:
    try:
        adb = adb_binary()
    except DeviceError:
        return []
    out = []
    for row in list_serials(adb, timeout):
        uri = f"adb://{row['serial']}"
        if row["state"] != "device":
            out.append(DeviceInfo(uri, "adb", row.get("model", row["serial"]), False, {},
                                  f"state {row['state']!r} (unauthorized/offline phones need attention)"))
            continue
        out.append(AdbDevice(uri).describe())
    return out
