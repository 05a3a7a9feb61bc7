"""ssh:// end to end against a real OpenSSH server on 127.0.0.1 (see conftest.start_sshd)."""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from conftest import SMALL
from helpers import EVIL_NAME, EVIL_NAME_2, make_toy_bundle

from edgekit import profiling
from edgekit.errors import DeviceError
from edgekit.profiling.devices import open_device


def test_ssh_profiles_real_iot_bundle_on_the_board(sshd, smollm2_bundles, tmp_path):
    """The runner runs in the ssh session with the 'board's' python + onnxruntime; JSON comes back over scp."""
    report = profiling.profile(smollm2_bundles["iot"], sshd.uri, **SMALL, **sshd.options)
    assert report.complete, report.data["error"]
    assert report.data["runner"]["kind"] == "edgekit-runner"
    assert report.data["runner"]["events_pulled"] >= 1 + 2 * 3  # start, load, 2 lengths x (1 warm-up + 2 runs)
    res = report.results
    assert [row["prompt_length"] for row in res["prompt_lengths"]] == list(SMALL["prompt_lengths"])
    for row in res["prompt_lengths"]:
        assert row["runs"] == 2 and row["prefill_tokens_per_s"]["median"] > 0
        assert len(row["decode_latencies_ms"]) == 2 * SMALL["decode_tokens"]
    assert res["warmup_runs_excluded"] == 2
    assert res["peak_rss_bytes"] > 50e6          # the 135M model really loaded in the remote process
    assert res["op_profile"]["available"] and res["op_profile"]["ops"][0]["total_ms"] > 0   # ORT profiling
    facts = report.device["facts"]
    assert facts["cores"] >= 1 and facts["ram_bytes"] > 0 and facts["os"]
    assert facts["runtimes"]["onnxruntime"] and facts["runner_facts"]["onnxruntime"]
    assert report.bundle["manifest_sha256"] == hashlib.sha256(
        (smollm2_bundles["iot"] / "manifest.json").read_bytes()).hexdigest()
    assert list(Path(sshd.options["workdir"]).iterdir()) == []       # the remote copy was removed


def test_ssh_remote_dir_is_removed_and_events_pulled(sshd, tmp_path):
    bundle = make_toy_bundle(tmp_path / "toy")
    report = profiling.profile(bundle, sshd.uri, prompt_lengths=(8,), decode_tokens=4, runs=1, warmup=0,
                               **sshd.options)
    assert report.complete and report.data["runner"]["events_pulled"] > 0
    assert list(Path(sshd.options["workdir"]).iterdir()) == []


def test_ssh_host_key_mismatch_is_refused(sshd, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sshd.port} " + " ".join(other.with_suffix(".pub").read_text().split()[:2]) + "\n")
    opts = {**sshd.options, "known_hosts": str(known)}
    with pytest.raises(DeviceError, match="does not match known_hosts"):
        profiling.profile(make_toy_bundle(tmp_path / "toy"), sshd.uri, prompt_lengths=(8,), decode_tokens=2,
                          runs=1, **opts)
    # even with accept-new: a changed key is not a new one
    with pytest.raises(DeviceError, match="does not match known_hosts"), \
            open_device(sshd.uri, **opts, accept_new_host_key=True) as dev:
        dev.facts()


def test_ssh_unknown_host_key_needs_explicit_acceptance(sshd, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    opts = {**sshd.options, "known_hosts": str(known)}
    with pytest.raises(DeviceError, match="not in known_hosts"), open_device(sshd.uri, **opts) as dev:
        dev.facts()
    with open_device(sshd.uri, **opts, accept_new_host_key=True) as dev:
        facts = dev.facts()
    assert facts["cores"] >= 1
    found = subprocess.run(["ssh-keygen", "-F", f"[127.0.0.1]:{sshd.port}", "-f", str(known)], check=False,
                           capture_output=True)
    assert found.returncode == 0                  # trusted on first use (hashed entry), checked from now on


def test_ssh_paths_with_spaces_and_quotes_are_not_run_by_a_shell(sshd, tmp_path, no_pwned):
    folder = tmp_path / "it's a \"bundle\" dir" / "toy $(touch /tmp/pwned) `x`"
    bundle = make_toy_bundle(folder, extra_files={EVIL_NAME: b"data", EVIL_NAME_2: b"more"})
    report = profiling.profile(bundle, sshd.uri, prompt_lengths=(8,), decode_tokens=4, runs=1, warmup=0,
                               keep=True, **sshd.options)
    assert report.complete
    remote = Path(report.data["runner"]["remote_dir"]) / "bundle"
    assert (remote / EVIL_NAME).read_bytes() == b"data"    # copied under its own name, byte for byte
    assert (remote / EVIL_NAME_2).read_bytes() == b"more"
    assert not list(remote.parent.rglob("pwned")) and not (Path(sshd.options["workdir"]) / "pwned").exists()
    assert json.loads((remote / "manifest.json").read_text())["name"] == report.bundle["name"]


def test_ssh_device_drop_mid_run_keeps_partial_results(own_sshd, tmp_path):
    bundle = make_toy_bundle(tmp_path / "toy", delay_ms=25)
    runs_seen = []

    def on_event(e):
        if e.get("event") == "run" and not e["warmup"]:
            runs_seen.append(e)
            if len(runs_seen) == 2:
                own_sshd.stop()                     # the board goes away: sshd and its sessions die

    with pytest.raises(profiling.ProfileInterrupted, match="connection failed or dropped") as err:
        profiling.profile(bundle, own_sshd.uri, prompt_lengths=(8, 16, 32), decode_tokens=20, runs=3, warmup=0,
                          on_event=on_event, timeout=120, **own_sshd.options)
    report = err.value.report
    assert not report.complete and "dropped" in report.data["error"]
    assert report.results["prompt_lengths"][0]["prompt_length"] == 8
    assert report.results["prompt_lengths"][0]["runs"] >= 2            # finished runs kept
    assert "partial" in report.to_markdown().lower() or "Incomplete" in report.to_markdown()


def test_ssh_command_timeout(sshd, tmp_path):
    bundle = make_toy_bundle(tmp_path / "toy", delay_ms=300)
    with pytest.raises(profiling.ProfileInterrupted, match="did not finish within 4 s") as err:
        profiling.profile(bundle, sshd.uri, prompt_lengths=(8,), decode_tokens=50, runs=1, warmup=0, timeout=4,
                          **sshd.options)
    assert not err.value.report.complete


def test_ssh_too_little_free_storage_fails_before_pushing(sshd, tmp_path):
    small = tmp_path / "small-fs"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=False,
                             capture_output=True)
    assert mounted.returncode == 0, f"tmpfs mount needed for this test (root): {mounted.stderr.decode()}"
    try:
        bundle = make_toy_bundle(tmp_path / "big", pad_bytes=3_000_000)
        with pytest.raises(DeviceError, match="not enough free storage") as err:
            profiling.profile(bundle, sshd.uri, prompt_lengths=(8,), decode_tokens=2, runs=1,
                              **{**sshd.options, "workdir": str(small)})
        assert not isinstance(err.value, profiling.ProfileInterrupted)
        assert list(small.iterdir()) == []          # nothing was pushed
    finally:
        subprocess.run(["umount", str(small)], check=True)
