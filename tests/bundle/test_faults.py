"""Bad input and faults: each refused with an error naming the problem; nothing written where it must not be."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from edgekit.bundle import Bundle
from edgekit.errors import BundleError, OutputPathError, UnknownTarget

HERE = Path(__file__).parent


def _edit_manifest(folder: Path, change) -> None:
    path = folder / "manifest.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def test_a_good_bundle_verifies(fake_bundle):
    b = Bundle.open(fake_bundle)
    files = b.manifest["files"]
    assert b.report.files_checked == len(files) >= 8
    assert {"weights.safetensors", "config.json", "tokenizer.json", "chat_template.jinja", "tokenizer_config.json",
            "kernels/fake_kernel.cpp", "fake_standalone.py", "README.md"} <= set(files)
    assert b.report.bytes_checked == sum(f["bytes"] for f in files.values())


def test_a_changed_file_is_named(bundle_copy):
    weights = bundle_copy / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01                      # one bit, same size: only the sha256 can tell
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"changed after bundling: weights\.safetensors \(sha256"):
        Bundle.open(bundle_copy)


def test_a_resized_file_is_named(bundle_copy):
    with (bundle_copy / "README.md").open("a") as f:
        f.write("edited\n")
    with pytest.raises(BundleError, match=r"README\.md \(\d+ bytes, manifest says \d+\)"):
        Bundle.open(bundle_copy)


def test_a_missing_file_is_named(bundle_copy):
    (bundle_copy / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match=r"incomplete: missing file\(s\) tokenizer\.json"):
        Bundle.open(bundle_copy)


def test_an_added_file_is_refused(bundle_copy):
    (bundle_copy / "extra.bin").write_bytes(b"x")
    with pytest.raises(BundleError, match=r"not in its manifest: extra\.bin"):
        Bundle.open(bundle_copy)


def test_a_missing_manifest(bundle_copy):
    (bundle_copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="no manifest.json"):
        Bundle.open(bundle_copy)


def test_a_newer_schema_is_refused(bundle_copy):
    _edit_manifest(bundle_copy, lambda d: d.update(schema_version=2))
    with pytest.raises(BundleError, match=r"schema version 2, newer than this edgekit reads \(1\.\.1\); upgrade"):
        Bundle.open(bundle_copy)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("max_seq_len", "64", r"'max_seq_len' is str '64', expected int"),
    ("tokenizer", {"file": "tokenizer.json"}, r"missing 'tokenizer.stop_ids'"),
    ("files", {"../../etc/passwd": {"sha256": "0" * 64, "bytes": 1}}, r"points outside the bundle"),
])
def test_a_bad_field_is_named(bundle_copy, key, value, message):
    _edit_manifest(bundle_copy, lambda d: d.update({key: value}))
    with pytest.raises(BundleError, match=message):
        Bundle.open(bundle_copy)


def test_an_unknown_target_lists_the_installed_ones(bundle_copy):
    def retarget(d):
        d["target"]["name"] = d["artifact"]["target"] = "tflite"
    _edit_manifest(bundle_copy, retarget)
    with pytest.raises(UnknownTarget, match=r"unknown target 'tflite'; installed: .*faketarget \(fake\)"):
        Bundle.open(bundle_copy)


def test_a_truncated_zip(fake_zip, tmp_path, cache_dir):
    cut = tmp_path / "cut.zip"
    data = fake_zip.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(BundleError, match="truncated or not a zip"):
        Bundle.open(cut)
    assert not cache_dir.exists() or not any(cache_dir.rglob("*.json"))


def test_a_corrupted_zip_entry(fake_zip, tmp_path, cache_dir):
    with zipfile.ZipFile(fake_zip) as zf:
        info = max(zf.infolist(), key=lambda i: i.compress_size)
        start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    data = bytearray(fake_zip.read_bytes())
    data[start + info.compress_size // 2] ^= 0xFF
    bad = tmp_path / "bad.zip"
    bad.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"bad\.zip is (truncated or )?damaged"):
        Bundle.open(bad)
    assert not any(cache_dir.rglob("*.safetensors"))  # the partial unpack is gone


@pytest.mark.parametrize("evil", ["b/../../evil.txt", "/tmp/edgekit-evil-abs.txt", "b/../b/../../evil.txt"])
def test_zip_slip_is_refused(tmp_path, cache_dir, evil):
    zpath = tmp_path / "work" / "slip.zip"
    zpath.parent.mkdir()
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("b/manifest.json", "{}")
        zf.writestr(evil, "owned")
    with pytest.raises(BundleError, match="points outside its folder; refused"):
        Bundle.open(zpath)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "work" / "evil.txt").exists()
    assert not Path("/tmp/edgekit-evil-abs.txt").exists()
    assert not cache_dir.exists() or not any(p.is_file() for p in cache_dir.rglob("*"))


def test_a_symlink_entry_is_refused(tmp_path, cache_dir):
    zpath = tmp_path / "link.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("b/manifest.json", "{}")
        link = zipfile.ZipInfo("b/model.pte")
        link.external_attr = (0o120777 << 16)
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(BundleError, match="is a symbolic link; refused"):
        Bundle.open(zpath)


def test_an_existing_output_is_refused_unless_forced(tiny_llama, fake_bundle):
    import edgekit

    before = (fake_bundle / "manifest.json").read_text()
    with pytest.raises(OutputPathError, match=r"already exists; .*force=True \(--force\)"):
        edgekit.bundle(tiny_llama, target="fake", out=fake_bundle.parent, max_seq_len=64)
    assert (fake_bundle / "manifest.json").read_text() == before


def test_force_replaces(tiny_llama, tmp_path):
    import edgekit

    first = edgekit.bundle(tiny_llama, target="fake", out=tmp_path, max_seq_len=64)
    (first.path / "stale.txt").write_text("from before")
    second = edgekit.bundle(tiny_llama, target="fake", out=tmp_path, max_seq_len=32, force=True)
    assert second.path == first.path and not (second.path / "stale.txt").exists()
    assert second.manifest["max_seq_len"] == 32
    assert [p.name for p in tmp_path.iterdir()] == [first.path.name]  # no staging or old copies left


def test_cli_refuses_an_existing_output(checkpoint_dir, fake_bundle, capsys):
    from edgekit.cli import main

    argv = ["edgekit", "bundle", str(checkpoint_dir("llama")), "--target", "fake", "--max-seq-len", "64",
            "-o", str(fake_bundle.parent)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exit_:
            main()
    assert exit_.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "OutputPathError" in err and "already exists" in err


def test_an_export_killed_half_way_leaves_no_bundle(checkpoint_dir, tmp_path):
    """SIGKILL in the middle of the export (weights written, config not yet): nothing at the output path; the
    next run cleans the dead run's staging folder and writes the bundle."""
    out = tmp_path / "dist"
    marker = tmp_path / "export-started"
    cmd = [sys.executable, str(HERE / "edgekit_with_fake.py"), "bundle", str(checkpoint_dir("llama")),
           "--target", "fake", "--max-seq-len", "64", "-o", str(out)]
    proc = subprocess.Popen([*cmd, "-O", "slow_export=60"], env={**os.environ, "FAKE_EXPORT_MARKER": str(marker)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the export never started"
        time.sleep(0.1)
    assert (Path(marker.read_text()) / "weights.safetensors").exists()  # half way: some files written
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    final = out / "llama-faketarget-fp32"
    assert not final.exists()
    assert [p.name for p in out.iterdir()] and all(p.name.startswith(".") for p in out.iterdir())
    from click.testing import CliRunner

    from edgekit.cli import cli

    r = CliRunner().invoke(cli, cmd[2:])  # the same command again, in this process
    assert r.exit_code == 0, r.output
    assert Bundle.open(final).manifest["name"] == final.name
    assert [p.name for p in out.iterdir()] == [final.name]  # the killed run's staging folder is gone
