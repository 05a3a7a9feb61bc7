"""Choosing the device runner: edgekit's two, a target's own, and the error when none fits."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from edgekit.errors import DeviceError, NoDeviceRunner, UnknownTarget
from edgekit.profiling import runner_select
from edgekit.profiling.collected import Collected
from edgekit.profiling.harness import run_remote
from edgekit.profiling.llama_main import LlamaMainRunner
from edgekit.profiling.python_runner import PythonRunner
from edgekit.profiling.runner_protocol import Runner
from edgekit.profiling.settings import Settings


@dataclass
class _Device:
    kind: str
    uri: str


class _TargetRunner:
    """A target's own runner: takes .bin runners only, and records what it was asked to run."""

    name = "toy-target-runner"
    accepted = "a .bin file"

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def accepts(self, device, runner_path):
        return runner_path is not None and runner_path.suffix == ".bin"

    def run(self, device, ref, settings, options, on_event):
        self.calls.append((device.uri, options.runner_path, options.keep))
        return Collected(runner={"kind": self.name})


REF = SimpleNamespace(target="toy", path=Path("/bundles/toy"))


@pytest.fixture
def no_target(monkeypatch):
    def missing(name):
        raise UnknownTarget(f"unknown target {name!r}; installed: none")

    monkeypatch.setattr(runner_select, "get_target", missing)


@pytest.fixture
def target_runner(monkeypatch):
    runner = _TargetRunner()
    monkeypatch.setattr(runner_select, "get_target", lambda name: SimpleNamespace(device_runner=lambda: runner))
    return runner


def test_builtin_runners_follow_the_protocol():
    assert all(isinstance(r, Runner) for r in runner_select.BUILTIN)


@pytest.mark.usefixtures("no_target")
def test_edgekits_runners_by_device_and_runner_path():
    ssh, adb = _Device("ssh", "ssh://pi@board"), _Device("adb", "adb://PHONE")
    assert isinstance(runner_select.select_runner(ssh, REF, None), PythonRunner)
    assert isinstance(runner_select.select_runner(adb, REF, Path("runner.py")), PythonRunner)
    assert isinstance(runner_select.select_runner(adb, REF, Path("/opt/llama_main")), LlamaMainRunner)
    assert isinstance(runner_select.select_runner(ssh, REF, Path("llama_main")), LlamaMainRunner)


@pytest.mark.usefixtures("no_target")
def test_no_runner_fits_names_what_was_given_and_what_is_accepted():
    with pytest.raises(NoDeviceRunner) as err:
        runner_select.select_runner(_Device("adb", "adb://PHONE"), REF, None)
    msg = str(err.value)
    assert isinstance(err.value, DeviceError)       # callers catching DeviceError keep working
    assert "adb://PHONE" in msg and "no --runner" in msg
    assert "llama_main:" in msg and "edgekit-python:" in msg


def test_a_targets_runner_comes_first_where_it_accepts(target_runner):
    ssh = _Device("ssh", "ssh://pi@board")
    assert runner_select.select_runner(ssh, REF, Path("prof.bin")) is target_runner
    assert isinstance(runner_select.select_runner(ssh, REF, None), PythonRunner)   # it declined: edgekit's
    got = run_remote(ssh, REF, Settings(), "prof.bin", None, None, None, keep=True)
    assert got.runner == {"kind": "toy-target-runner"}
    assert target_runner.calls == [("ssh://pi@board", Path("prof.bin"), True)]


def test_a_targets_runner_is_listed_when_nothing_fits(target_runner):
    with pytest.raises(NoDeviceRunner, match="toy-target-runner: a .bin file"):
        runner_select.select_runner(_Device("adb", "adb://PHONE"), REF, None)


def test_a_target_without_device_runner_adds_none(monkeypatch):
    monkeypatch.setattr(runner_select, "get_target", lambda name: SimpleNamespace())
    assert runner_select.target_runners(REF) == ()
