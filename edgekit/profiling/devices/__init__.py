"""Device URIs (`local`, `ssh://user@host[:port]`, `adb://SERIAL`, `adb://`, `ios://UDID`) and the devices file.

`~/.config/edgekit/devices.toml` (or $XDG_CONFIG_HOME/edgekit/devices.toml, or $EDGEKIT_DEVICES_FILE) names devices
and their options:

    [devices.pi5]
    uri = "ssh://pi@raspberrypi.local"
    python = "/home/pi/venv/bin/python"
    identity_file = "~/.ssh/id_ed25519"

    [devices.pixel8]
    uri = "adb://39021FDH2000QZ"
    runner = "~/executorch/cmake-out-android/examples/models/llama/llama_main"
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import tomllib

from edgekit.errors import DeviceError
from edgekit.profiling.devices.base import CommandResult, CommandTimeout, Device, DeviceInfo

SCHEMES = ("local", "ssh://", "adb://", "ios://")
KNOWN_OPTIONS = ("uri", "name", "python", "runner", "workdir", "identity_file", "known_hosts", "accept_new_host_key",
                 "ssh_config", "connect_timeout", "adb", "threads", "multiplex", "keep")


def devices_file() -> Path:
    if os.environ.get("EDGEKIT_DEVICES_FILE"):
        return Path(os.environ["EDGEKIT_DEVICES_FILE"])
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "edgekit" / "devices.toml"


def configured_devices(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """name -> options (with `uri`) from the devices file; {} when there is none."""
    path = path or devices_file()
    if not path.exists():
        return {}
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise DeviceError(f"{path} is not valid TOML: {e}") from None
    out = {}
    for name, opts in (doc.get("devices") or {}).items():
        if not isinstance(opts, dict) or "uri" not in opts:
            raise DeviceError(f"{path}: [devices.{name}] needs a uri = \"ssh://...\" / \"adb://...\" / \"ios://...\"")
        unknown = sorted(set(opts) - set(KNOWN_OPTIONS))
        if unknown:
            raise DeviceError(f"{path}: [devices.{name}] has unknown option(s) {', '.join(unknown)}; "
                              f"known: {', '.join(KNOWN_OPTIONS)}")
        out[name] = {"name": name, **opts}
    return out


def resolve(spec: str, **overrides: Any) -> tuple[str, dict[str, Any]]:
    """A device name or URI -> (uri, options): devices-file options, then `overrides` (None values ignored)."""
    table = configured_devices()
    if spec in table:
        opts = dict(table[spec])
    else:
        opts = next((dict(o) for o in table.values() if o["uri"] == spec), {"uri": spec})
    opts.update({k: v for k, v in overrides.items() if v is not None})
    uri = opts.pop("uri")
    if not uri.startswith(SCHEMES):
        names = ", ".join(table) or "none configured"
        raise DeviceError(f"unknown device {spec!r}; expected local, ssh://user@host[:port], adb://SERIAL, adb://, "
                          f"ios://UDID, or a name from {devices_file()} ({names})")
    return uri, opts


def open_device(spec: str, **overrides: Any) -> Device:
    uri, opts = resolve(spec, **overrides)
    if uri == "local":
        from edgekit.profiling.devices.local import LocalDevice

        return LocalDevice(uri, **opts)
    if uri.startswith("ssh://"):
        from edgekit.profiling.devices.ssh import SshDevice

        return SshDevice(uri, **opts)
    if uri.startswith("adb://"):
        from edgekit.profiling.devices.adb import AdbDevice

        return AdbDevice(uri, **opts)
    from edgekit.profiling.devices.ios import IosDevice

    return IosDevice(uri, **opts)


def list_devices(probe_timeout: float = 20) -> list[DeviceInfo]:
    """This host, attached adb devices, configured ssh/adb/ios devices, iPhones seen by devicectl (macOS)."""
    from edgekit.profiling.devices.adb import list_adb_devices
    from edgekit.profiling.devices.ios import list_ios_devices
    from edgekit.profiling.devices.local import LocalDevice

    found = [LocalDevice().describe()]
    seen = {"local"}
    for name, opts in configured_devices().items():
        o = {k: v for k, v in opts.items() if k != "uri"}
        try:
            dev = open_device(opts["uri"], **o)
        except DeviceError as e:
            found.append(DeviceInfo(opts["uri"], opts["uri"].split(":")[0], name, False, {}, str(e)))
        else:
            found.append(dev.describe())
        seen.add(opts["uri"])
    for info in list_adb_devices(probe_timeout) + list_ios_devices():
        if info.uri not in seen:
            found.append(info)
            seen.add(info.uri)
    return found


__all__ = ["CommandResult", "CommandTimeout", "Device", "DeviceInfo", "configured_devices", "devices_file",
           "list_devices", "open_device", "resolve"]
