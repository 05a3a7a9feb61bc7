"""adb:// end to end: Debian's real `adb` client and server, connected over TCP to adb_standin (the phone stand-in)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from adb_standin import AdbStandIn
from conftest import SMALL
from helpers import EVIL_NAME, EVIL_NAME_2, make_toy_bundle

from edgekit import profiling
from edgekit.errors import DeviceError
from edgekit.profiling.devices import list_devices
from edgekit.profiling.python_runner import RUNNER_FILE


def _adb(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["adb", *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def adb_server():
    """The private adb server (ANDROID_ADB_SERVER_PORT set and the server stopped by conftest)."""
    assert _adb("start-server").returncode == 0, "Debian's adb is needed: apt-get install adb"
    return os.environ["ANDROID_ADB_SERVER_PORT"]


def _connect(tmp_path: Path, **kw) -> AdbStandIn:
    phone = AdbStandIn(tmp_path / "phone-root", **kw)
    out = _adb("connect", phone.serial)
    assert f"connected to {phone.serial}" in out.stdout, out.stdout + out.stderr
    assert _adb("-s", phone.serial, "wait-for-device", timeout=30).returncode == 0
    return phone


@pytest.fixture
def phone(adb_server, tmp_path):
    p = _connect(tmp_path)
    yield p
    _adb("disconnect", p.serial)
    p.drop()


def _phone_tmp(p: AdbStandIn) -> Path:
    return p.sandbox / "data" / "local" / "tmp"


def test_adb_profiles_real_android_bundle_with_our_runner(phone, smollm2_bundles):
    """The ExecuTorch bundle + our runner are pushed with adb to /data/local/tmp and run by the phone's shell."""
    report = profiling.profile(smollm2_bundles["android"], f"adb://{phone.serial}", runner=RUNNER_FILE,
                               python=sys.executable, **SMALL)
    assert report.complete, report.data["error"]
    assert report.device["facts"]["os"] == "Android 14 (SDK 34)" and report.device["facts"]["soc"] == "standin-soc"
    rows = report.results["prompt_lengths"]
    assert [r["prompt_length"] for r in rows] == list(SMALL["prompt_lengths"]) and all(r["runs"] == 2 for r in rows)
    assert report.results["decode_tokens_per_s"]["median"] > 0
    assert report.results["op_profile"]["available"]              # ETDump through the standalone session
    assert any("/data/local/tmp/edgekit-profile-" in c for c in phone.commands)
    assert list(_phone_tmp(phone).iterdir()) == []                 # cleaned up on the phone


def test_adb_devices_lists_the_phone_with_its_facts(phone):
    found = {d.uri: d for d in list_devices()}
    dev = found[f"adb://{phone.serial}"]
    assert dev.reachable and dev.facts["model"] == "edgekit-tests EdgekitStandIn"
    assert dev.facts["os"].startswith("Android 14") and dev.facts["cores"] >= 1


def test_adb_without_runner_says_what_is_missing(phone, tmp_path):
    with pytest.raises(DeviceError, match="llama_main"):
        profiling.profile(make_toy_bundle(tmp_path / "toy"), f"adb://{phone.serial}", prompt_lengths=(8,))


def test_adb_llama_main_style_runner_binary(phone, tmp_path):
    """A runner that is not a .py file is driven like ExecuTorch's llama_main: pushed, chmod'ed, its
    PyTorchObserver stats parsed. (Here a shell script printing that line stands in for the real binary.)"""
    fake = tmp_path / "llama_main"
    fake.write_text('#!/bin/sh\necho "loading $1"\necho \'PyTorchObserver {"prompt_tokens":8,"generated_tokens":5,'
                    '"model_load_start_ms":1000,"model_load_end_ms":1250,"inference_start_ms":1300,'
                    '"inference_end_ms":1500,"prompt_eval_end_ms":1340,"first_token_ms":1340,'
                    '"aggregate_sampling_time_ms":3,"SCALING_FACTOR_UNITS_PER_SECOND":1000}\'\n')
    report = profiling.profile(make_toy_bundle(tmp_path / "toy"), f"adb://{phone.serial}", runner=fake,
                               prompt_lengths=(8,), decode_tokens=4, runs=2, warmup=1)
    assert report.complete and report.data["runner"]["kind"] == "llama_main"
    row = report.results["prompt_lengths"][0]
    assert row["runs"] == 2 and row["prefill_ms"]["median"] == pytest.approx(40.0)
    assert row["decode_ms_per_token"]["median"] == pytest.approx(40.0)          # (1500-1340) / (5-1)
    assert report.results["load_ms"] == pytest.approx(250.0)


def test_adb_phone_drops_mid_run_keeps_partial_results(phone, tmp_path):
    bundle = make_toy_bundle(tmp_path / "toy", delay_ms=25)
    seen = []

    def on_event(e):
        if e.get("event") == "run":
            seen.append(e)
            if len(seen) == 2:
                phone.drop()

    with pytest.raises(profiling.ProfileInterrupted, match="dropped off") as err:
        profiling.profile(bundle, f"adb://{phone.serial}", runner=RUNNER_FILE, python=sys.executable,
                          prompt_lengths=(8, 16), decode_tokens=20, runs=3, warmup=0, on_event=on_event, timeout=60)
    report = err.value.report
    assert not report.complete and report.results["prompt_lengths"][0]["runs"] >= 2


def test_adb_too_little_free_storage_fails_before_pushing(adb_server, tmp_path):
    phone = _connect(tmp_path, fake_free_kb=500)
    try:
        bundle = make_toy_bundle(tmp_path / "toy", pad_bytes=2_000_000)
        with pytest.raises(DeviceError, match="not enough free storage"):
            profiling.profile(bundle, f"adb://{phone.serial}", runner=RUNNER_FILE, python=sys.executable,
                              prompt_lengths=(8,))
        assert list(_phone_tmp(phone).iterdir()) == []
        assert not any("mkdir" in c for c in phone.commands)       # stopped before creating anything
    finally:
        _adb("disconnect", phone.serial)
        phone.drop()


def test_adb_paths_with_spaces_and_quotes(phone, tmp_path, no_pwned):
    folder = tmp_path / "my \"phone\" bundles" / "it's $(touch pwned)"
    bundle = make_toy_bundle(folder, extra_files={EVIL_NAME: b"one", EVIL_NAME_2: b"two"})
    report = profiling.profile(bundle, f"adb://{phone.serial}", runner=RUNNER_FILE, python=sys.executable,
                               prompt_lengths=(8,), decode_tokens=4, runs=1, warmup=0, keep=True)
    assert report.complete
    remote = phone.sandbox / report.data["runner"]["remote_dir"].lstrip("/") / "bundle"
    assert (remote / EVIL_NAME).read_bytes() == b"one" and (remote / EVIL_NAME_2).read_bytes() == b"two"
    assert not list(phone.sandbox.rglob("pwned"))
