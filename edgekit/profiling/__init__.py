"""edgekit.profile(bundle, device): latency, throughput and memory of a bundle on this host, a board or a phone.

    report = edgekit.profile("dist/smollm2-135m-onnx-w4", "ssh://pi@raspberrypi.local", prompt_lengths=(64, 256))
    report.write_html("pi.html")

Devices: `local`, `ssh://user@host[:port]`, `adb://SERIAL`, `ios://UDID`, or a name from devices.toml.
"""
from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgekit.errors import DeviceError, EdgekitError, ProfileSettingError
from edgekit.profiling.devices import Device, DeviceInfo, list_devices, open_device
from edgekit.profiling.history import DB_NAME, History, cache_dir
from edgekit.profiling.report import SCHEMA_VERSION, ProfileReport

log = logging.getLogger("edgekit.profile")


class ProfileInterrupted(DeviceError):
    """The device failed mid-run. `.report` holds every measurement that finished (complete=False)."""

    def __init__(self, message: str, report: ProfileReport):
        super().__init__(message)
        self.report = report


def profile(bundle: str | Path, device: str = "local", *, prompt_lengths: Sequence[int] = (64, 256, 1024),
            decode_tokens: int = 128, runs: int = 3, warmup: int = 1, threads: int | None = None,
            runner: str | Path | None = None, python: str | None = None, session_module: str | Path | None = None,
            timeout: float = 1800.0, op_profile: bool = True, speculate: str = "ngram",
            history: bool | str | Path = True,
            compare_last: bool = False, threshold: float = 0.10,
            on_event: Callable[[dict[str, Any]], None] | None = None, **device_options: Any) -> ProfileReport:
    """Profile `bundle` on `device`; returns the ProfileReport (also stored in the history unless history=False).

    Raises ProfileInterrupted (a DeviceError, with `.report` holding the partial results) when the device drops,
    a command times out or the runner fails mid-run; DeviceError before anything ran (unreachable, no storage)."""
    from edgekit.profiling.bundles import open_bundle
    from edgekit.profiling.harness import run_local, run_remote
    from edgekit.profiling.results import aggregate
    from edgekit.profiling.settings import Settings

    if history is False and compare_last:   # before the run: an argument error must not cost the measurements
        raise EdgekitError("compare_last needs the history (history=False was given)")
    settings = Settings(tuple(int(n) for n in prompt_lengths), int(decode_tokens), int(runs), int(warmup),
                        threads, op_profile=op_profile, timeout_s=float(timeout), speculate=speculate)
    # Verified (pin, paths, every file's hash) and the settings checked against it before any device is opened:
    # only checked bundle code runs, and an impossible setting costs no device work.
    ref = open_bundle(bundle)
    settings.check_fits(ref.summary().get("max_seq_len"), f"{ref.path.name} (max_seq_len)")
    if _kind(device) == "local" and not session_module:
        ref.require_target()
    dev = open_device(device, runner=str(runner) if runner else None, python=python, **device_options)
    runner = runner or dev.options.get("runner")
    try:
        facts = dev.facts()
        if dev.kind == "local":
            got = run_local(ref, settings, str(session_module) if session_module else None, on_event)
        else:
            got = run_remote(dev, ref, settings, str(runner) if runner else None, dev.options.get("python"),
                             str(session_module) if session_module else None, on_event,
                             keep=bool(dev.options.get("keep")))
    finally:
        dev.close()
    from edgekit.profiling.report import build_report

    skipped = [e for e in got.events if e.get("event") == "skip"]
    if skipped and got.error is None:   # the device's session holds fewer tokens than its manifest says
        got.error = ProfileSettingError("not measured: " + "; ".join(
            f"prompt length {e['prompt_length']} ({e['reason']})" for e in skipped))

    if got.runner.get("remote_facts"):
        facts = {**facts, "runner_facts": got.runner.pop("remote_facts")}
    device_doc = {"uri": dev.uri, "kind": dev.kind, "name": dev.options.get("name") or dev.uri, "facts": facts}
    report = build_report(device_doc, ref.summary(), settings.as_dict(), got.runner, aggregate(got.events),
                          str(got.error) if got.error else None, got.complete)
    _record(report, history, compare_last, threshold)
    if got.error is not None:
        raise ProfileInterrupted(f"{got.error} (partial report: {len(report.results['prompt_lengths'])} prompt "
                                 "length(s) measured)", report) from got.error
    return report


def _kind(device: str) -> str:
    """The device kind from its URI or devices-file name, without opening it (settings are checked first)."""
    from edgekit.profiling.devices import resolve

    uri, _ = resolve(device)
    return "local" if uri == "local" else uri.split("://", 1)[0]


def _record(report: ProfileReport, history: bool | str | Path, compare_last: bool, threshold: float) -> None:
    """Store the run and compare it with the last one. Optional steps: a history that cannot be opened or written
    (corrupt file, read-only cache folder) is a warning on the report, never the loss of the measurements."""
    if history is False:
        return
    try:
        _store_and_compare(report, History(None if history is True else history), compare_last, threshold)
    except (OSError, sqlite3.Error, ValueError) as e:   # ValueError: a stored report that is not JSON
        where = history if history is not True else cache_dir() / DB_NAME
        msg = (f"the profile history {where} could not be used ({type(e).__name__}: {e}); this run is not stored "
               "in it (the report itself is complete). Set EDGEKIT_CACHE_DIR to a writable folder, or move the "
               "file aside if it is damaged")
        log.warning("%s", msg)
        report.warnings.append(msg)
        report.data["history_id"] = None
        if compare_last:
            report.data["regressions"] = {"compared_with": None, "threshold": threshold, "found": [],
                                          "note": "history unavailable; nothing compared"}


def _store_and_compare(report: ProfileReport, store: History, compare_last: bool, threshold: float) -> None:
    report.data["history_id"] = store.add(report)
    if compare_last:
        from edgekit.profiling.results import compare

        previous = store.last(report, before_id=report.data["history_id"])
        if previous is None:
            report.data["regressions"] = {"compared_with": None, "threshold": threshold, "found": [],
                                          "note": "no earlier run of this bundle hash, device and settings"}
        else:
            pid, prev = previous
            report.data["regressions"] = {"compared_with": {"history_id": pid, "created": prev.data["created"]},
                                          "threshold": threshold,
                                          "found": compare(report.results, prev.results, threshold)}


def compare_reports(paths: Sequence[str | Path]) -> list[ProfileReport]:
    return [ProfileReport.load(p) for p in paths]


__all__ = ["SCHEMA_VERSION", "Device", "DeviceInfo", "History", "ProfileInterrupted", "ProfileReport",
           "compare_reports", "list_devices", "open_device", "profile"]
