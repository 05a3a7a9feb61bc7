"""This host: profiling runs in this process's runtimes, through the standalone session edgekit.profiling.harness picks."""
from __future__ import annotations

import os
import platform
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from edgekit.profiling.devices.base import FACTS_SCRIPT, CommandResult, Device, parse_facts, run_process

RUNTIME_PACKAGES = ("numpy", "torch", "onnxruntime", "executorch", "coremltools", "edgekit")


def runtime_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in RUNTIME_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


class LocalDevice(Device):
    kind = "local"

    def __init__(self, uri: str = "local", **options: Any):
        super().__init__("local", **options)

    def facts(self) -> dict[str, Any]:
        facts: dict[str, Any] = {}
        if Path("/proc/cpuinfo").exists():
            res = run_process(["sh", "-c", FACTS_SCRIPT], timeout=30)
            facts = parse_facts(res.stdout)
        facts.setdefault("os", f"{platform.system()} {platform.release()}")
        facts.setdefault("arch", platform.machine())
        facts.setdefault("cpu", platform.processor() or None)
        facts["cores"] = facts.get("cores") or os.cpu_count()
        if not facts.get("ram_bytes") and hasattr(os, "sysconf"):
            try:
                facts["ram_bytes"] = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            except (ValueError, OSError):
                pass
        facts["hostname"] = platform.node()
        facts["runtimes"] = runtime_versions()
        return {k: v for k, v in facts.items() if v is not None}

    def run(self, argv: list[str], timeout: float, on_line: Callable[[str], None] | None = None) -> CommandResult:
        return run_process(argv, timeout, on_line)
