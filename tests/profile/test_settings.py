"""Impossible profile settings are errors before any device work, and what was asked for but not measured is never
called complete: a prompt longer than the bundle holds, zero runs, no time; --timeout on the in-process device."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest
from helpers import TOY_SESSION, make_toy_bundle

from edgekit import profiling
from edgekit.errors import ProfileSettingError

# nothing listens on port 9: a device opened (connected) there would fail with a DeviceError, not a setting error
UNREACHABLE = "ssh://nobody@127.0.0.1:9"


@pytest.fixture
def toy(tmp_path):
    return make_toy_bundle(tmp_path / "toy", max_seq_len=256)


@pytest.mark.parametrize("device", ["local", UNREACHABLE])
def test_prompt_longer_than_the_bundle_is_refused_before_the_device(toy, device):
    with pytest.raises(ProfileSettingError) as e:
        profiling.profile(toy, device, prompt_lengths=(64, 1024), decode_tokens=16, history=False,
                          session_module=TOY_SESSION)
    msg = str(e.value)
    assert "[1024]" in msg and "256" in msg and "at most 240" in msg


@pytest.mark.parametrize("kwargs", [{"runs": 0}, {"warmup": -1}, {"decode_tokens": 0}, {"timeout": 0},
                                    {"threads": 0}, {"prompt_lengths": (0,)}])
def test_impossible_settings_are_errors(toy, kwargs):
    opts = {"prompt_lengths": (8,), "decode_tokens": 4, "history": False, **kwargs}
    with pytest.raises(ProfileSettingError):
        profiling.profile(toy, UNREACHABLE, **opts)


def test_timeout_stops_a_local_run_and_keeps_what_finished(tmp_path):
    toy = make_toy_bundle(tmp_path / "slow", delay_ms=5.0, max_seq_len=256)
    t0 = time.monotonic()
    with pytest.raises(profiling.ProfileInterrupted) as e:   # 4 runs x 2 lengths x 65 calls x 5 ms ~ 2.6 s asked
        profiling.profile(toy, "local", prompt_lengths=(8, 16), decode_tokens=64, runs=3, warmup=1, timeout=0.8,
                          history=False, op_profile=False, session_module=TOY_SESSION)
    assert time.monotonic() - t0 < 2.0
    report = e.value.report
    assert not report.complete and "timeout of 0.8 s" in report.data["error"]
    assert "measurement(s) finished before that are kept" in str(e.value)


def test_a_session_holding_less_than_its_manifest_is_not_complete(tmp_path):
    toy = make_toy_bundle(tmp_path / "short", max_seq_len=256)
    short = tmp_path / "short_session.py"   # the device's session says 32 tokens where the manifest says 256
    short.write_text(TOY_SESSION.read_text() + "\n\n_open = open_session\n\n\ndef open_session(*a, **k):\n"
                     "    s = _open(*a, **k)\n    s.max_seq_len = 32\n    return s\n")
    with pytest.raises(profiling.ProfileInterrupted) as e:
        profiling.profile(toy, "local", prompt_lengths=(8, 64), decode_tokens=8, runs=1, warmup=0, history=False,
                          op_profile=False, session_module=short)
    report = e.value.report
    assert not report.complete
    assert [r["prompt_length"] for r in report.results["prompt_lengths"]] == [8]
    assert [s["prompt_length"] for s in report.results["skipped"]] == [64]
    assert "prompt length 64" in report.data["error"]


def test_cli_exits_2_naming_the_limit(toy):
    r = subprocess.run([sys.executable, "-m", "edgekit", "profile", str(toy), "--prompt-lengths", "1024",
                        "--no-history", "--session-module", str(TOY_SESSION)], check=False, capture_output=True,
                       text=True,
                       timeout=120)
    assert r.returncode == 2, r.stderr
    assert "1024" in r.stderr and "256" in r.stderr and "Traceback" not in r.stderr
