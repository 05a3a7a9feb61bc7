"""What every device can do: tell its facts, push/pull files, run a command with a timeout, report free storage."""
from __future__ import annotations

import logging
import re
import shlex
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import DeviceError

log = logging.getLogger("edgekit.profile")


class CommandTimeout(DeviceError):
    """A command on a device did not finish within its timeout."""


@dataclass
class CommandResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float = 0.0

    def check(self, what: str) -> CommandResult:
        if self.returncode != 0:
            tail = (self.stderr or self.stdout).strip()[-600:]
            raise DeviceError(f"{what} failed (exit {self.returncode}): {tail or 'no output'}")
        return self


@dataclass
class DeviceInfo:
    """One line of `edgekit devices`."""

    uri: str
    kind: str
    name: str
    reachable: bool
    facts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def run_process(argv: list[str], timeout: float, on_line: Callable[[str], None] | None = None,
                stdin_data: bytes | None = None, what: str | None = None) -> CommandResult:
    """Run `argv` (never through a local shell), streaming stdout lines to `on_line`; CommandTimeout past `timeout`."""
    log.debug("run: %s", shlex.join(argv))
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out_lines: list[str] = []
    err_chunks: list[bytes] = []

    def read_out() -> None:
        for raw in proc.stdout:
            line = raw.decode("utf-8", "replace")
            out_lines.append(line)
            if on_line is not None:
                on_line(line.rstrip("\n"))

    def read_err() -> None:
        err_chunks.append(proc.stderr.read())

    readers = [threading.Thread(target=read_out, daemon=True), threading.Thread(target=read_err, daemon=True)]
    for t in readers:
        t.start()
    if stdin_data is not None:
        try:
            proc.stdin.write(stdin_data)
            proc.stdin.close()
        except BrokenPipeError:
            pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        for t in readers:  # a multiplexing ssh master may still hold the pipes: don't wait for it
            t.join(timeout=1)
        raise CommandTimeout(f"{what or shlex.join(argv[:3])} did not finish within {timeout:g} s (killed); "
                             f"raise --timeout if the device is just slow") from None
    for t in readers:
        t.join(timeout=5)
    return CommandResult(argv, proc.returncode, "".join(out_lines), b"".join(err_chunks).decode("utf-8", "replace"),
                         time.perf_counter() - t0)


class Device(ABC):
    """A place to run a bundle. Remote paths are POSIX strings on the device; local ones are Paths."""

    kind: str = "device"

    def __init__(self, uri: str, **options: Any):
        self.uri = uri
        self.options = options

    @abstractmethod
    def facts(self) -> dict[str, Any]:
        """OS, CPU/SoC, cores, RAM, runtime versions."""

    def run(self, argv: list[str], timeout: float, on_line: Callable[[str], None] | None = None) -> CommandResult:
        """Run `argv` on the device (each element one argument, quoted for the device's shell)."""
        raise DeviceError(f"{self.uri}: running commands is not supported on {self.kind} devices")

    def push(self, local: Path, remote: str, timeout: float) -> None:
        raise DeviceError(f"{self.uri}: pushing files is not supported on {self.kind} devices")

    def pull(self, remote: str, local: Path, timeout: float) -> None:
        raise DeviceError(f"{self.uri}: pulling files is not supported on {self.kind} devices")

    def workdir(self) -> str:
        return str(self.options.get("workdir") or "/tmp")

    def free_bytes(self, path: str, timeout: float = 30) -> int | None:
        """Free bytes on the filesystem holding `path` (its nearest existing parent), from `df -k` on the device."""
        script = f'p={shlex.quote(path)}; while [ ! -d "$p" ]; do p=$(dirname "$p"); done; df -k "$p"'
        res = self.run(["sh", "-c", script], timeout=timeout)
        if res.returncode != 0:
            log.warning("%s: df failed (%s); free storage not checked", self.uri, res.stderr.strip()[:200])
            return None
        return parse_df_kb(res.stdout)

    def remove(self, remote: str, timeout: float = 60) -> None:
        self.run(["rm", "-rf", remote], timeout=timeout)

    def close(self) -> None:
        pass

    def describe(self) -> DeviceInfo:
        try:
            return DeviceInfo(self.uri, self.kind, self.options.get("name") or self.uri, True, self.facts())
        except DeviceError as e:
            return DeviceInfo(self.uri, self.kind, self.options.get("name") or self.uri, False, {}, str(e))
        finally:
            self.close()

    def __enter__(self) -> Device:  # noqa: PYI034 - subclasses need no narrower type here
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_df_kb(text: str) -> int | None:
    """Available bytes from `df -k` output (POSIX, busybox and Android toybox layouts)."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if len(lines) < 2:
        return None
    header = lines[0].split()
    fields = " ".join(lines[1:]).split()  # long device names wrap onto two lines
    idx = next((i for i, h in enumerate(header) if h.lower() in ("available", "avail")), 3)
    try:  # align from the left: a mount point with spaces only adds fields at the end
        return int(fields[idx]) * 1024
    except (IndexError, ValueError):
        return None


FACTS_SCRIPT = r"""
echo "@@uname"; uname -srm 2>/dev/null
echo "@@os"; (. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME") || true
echo "@@nproc"; (nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || grep -c ^processor /proc/cpuinfo)
echo "@@meminfo"; grep -E '^(MemTotal|MemAvailable):' /proc/meminfo 2>/dev/null
echo "@@cpuinfo"; grep -m1 -E '^(model name|Hardware|Processor|cpu model|CPU part)' /proc/cpuinfo 2>/dev/null
echo "@@soc"; cat /sys/firmware/devicetree/base/model 2>/dev/null; echo
echo "@@getprop"; for k in ro.product.model ro.product.manufacturer ro.build.version.release ro.build.version.sdk \
  ro.soc.model ro.soc.manufacturer ro.board.platform ro.product.cpu.abi; do v=$(getprop $k 2>/dev/null); \
  [ -n "$v" ] && echo "$k=$v"; done
echo "@@end"
"""


def parse_facts(text: str) -> dict[str, Any]:
    """Facts from FACTS_SCRIPT's output (run by `sh` on a Linux board or an Android phone)."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("@@"):
            current = line[2:].strip()
            sections[current] = []
        elif current and line.strip():
            sections[current].append(line.strip())
    facts: dict[str, Any] = {}
    uname = " ".join(sections.get("uname", []))
    props = dict(ln.split("=", 1) for ln in sections.get("getprop", []) if "=" in ln)
    if props.get("ro.build.version.release"):
        facts["os"] = f"Android {props['ro.build.version.release']} (SDK {props.get('ro.build.version.sdk', '?')})"
    else:
        facts["os"] = (sections.get("os") or [uname])[0] if (sections.get("os") or uname) else None
    facts["kernel"] = uname or None
    facts["arch"] = uname.split()[-1] if uname else props.get("ro.product.cpu.abi")
    nproc = sections.get("nproc", [])
    facts["cores"] = int(nproc[0]) if nproc and nproc[0].isdigit() else None
    mem = {ln.split(":")[0]: int(re.sub(r"\D", "", ln)) * 1024 for ln in sections.get("meminfo", []) if ":" in ln}
    facts["ram_bytes"] = mem.get("MemTotal")
    facts["ram_available_bytes"] = mem.get("MemAvailable")
    cpu = sections.get("cpuinfo", [])
    facts["cpu"] = cpu[0].split(":", 1)[1].strip() if cpu and ":" in cpu[0] else None
    soc = [s.replace("\x00", "") for s in sections.get("soc", []) if s.replace("\x00", "").strip()]
    facts["soc"] = props.get("ro.soc.model") or props.get("ro.board.platform") or (soc[0] if soc else None)
    if props:
        facts["model"] = " ".join(filter(None, [props.get("ro.product.manufacturer"), props.get("ro.product.model")]))
    return {k: v for k, v in facts.items() if v is not None}


RUNTIME_PROBE = ("import json, platform\nfrom importlib.metadata import version\nout = {'python': "
                 "platform.python_version()}\nfor m in ('numpy', 'onnxruntime', 'executorch'):\n    try:\n"
                 "        out[m] = version(m)\n    except Exception:\n        out[m] = None\nprint(json.dumps(out))\n")
