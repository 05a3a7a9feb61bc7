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
from manifest_edit import edit_manifest

from edgekit.bundling import Bundle
from edgekit.errors import BundleError, OutputPathError, UnknownTarget

HERE = Path(__file__).parent


def _edit_manifest(folder: Path, change) -> None:
    edit_manifest(folder, change)  # pin rewritten: the checks below the pin must catch each edit


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
    _edit_manifest(bundle_copy, lambda d: d.update(schema_version=3))
    with pytest.raises(BundleError, match=r"schema version 3, newer than this edgekit reads \(1\.\.2\); upgrade"):
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


# ---- where a bundle is written --------------------------------------------------------------------------------------
@pytest.fixture
def no_export(monkeypatch):
    """Fails the test if an export starts: output path problems must be found before any export work."""
    def refuse(*_a, **_k):
        raise AssertionError("an export started although the output path is unusable")
    monkeypatch.setattr("edgekit.export_api.export", refuse)


def test_bundling_onto_a_file_is_refused_before_exporting(tiny_llama, tmp_path, no_export):
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    with pytest.raises(OutputPathError, match=r"cannot write to .*notes\.txt: .*notes\.txt is a file, not a folder"):
        edgekit_bundle(tiny_llama, out=afile)
    assert afile.read_text() == "mine"


@pytest.fixture
def readonly_dir(tmp_path):
    """A real read-only folder: a tmpfs mounted ro (chmod does not stop root). Skipped only where mount is refused."""
    where = tmp_path / "ro"
    where.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(where)], capture_output=True,
                         text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here ({res.stderr.strip()})")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def test_bundling_into_a_read_only_folder_is_refused_before_exporting(tiny_llama, readonly_dir, no_export):
    with pytest.raises(OutputPathError, match=r"cannot write to .*ro: .*ro is not writable"):
        edgekit_bundle(tiny_llama, out=readonly_dir)
    with pytest.raises(OutputPathError, match=r"cannot write to .*ro/dist: .*ro is not writable"):
        edgekit_bundle(tiny_llama, out=readonly_dir / "dist")


def test_cli_bundle_onto_a_file_exits_2(checkpoint_dir, tmp_path, capsys):
    from edgekit.cli import main

    afile = tmp_path / "f"
    afile.write_text("x")
    argv = ["edgekit", "bundle", str(checkpoint_dir("llama")), "--target", "fake", "-o", str(afile)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exit_:
            main()
    err = " ".join(capsys.readouterr().err.split())
    assert exit_.value.code == 2 and "OutputPathError" in err and "is a file, not a folder" in err


def edgekit_bundle(model, **kw):
    import edgekit

    return edgekit.bundle(model, target="fake", max_seq_len=64, **kw)


def test_force_does_not_replace_a_folder_that_is_not_a_bundle(tiny_llama, tmp_path, no_export):
    mine = tmp_path / "llama-faketarget-fp32"
    mine.mkdir()
    (mine / "thesis.tex").write_text("mine")
    with pytest.raises(OutputPathError, match=r"is not an edgekit output .*--force replaces only an earlier"):
        edgekit_bundle(tiny_llama, out=tmp_path, force=True)
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]


def test_force_never_replaces_the_artifact_being_bundled(tiny_llama, tmp_path):
    import edgekit

    art = edgekit.export(tiny_llama, "fake", out=tmp_path / "llama-faketarget-fp32", max_seq_len=64,
                         show_progress=False)
    with pytest.raises(OutputPathError, match=r"is the checkpoint being read; --force never replaces it"):
        edgekit.bundle(art.path, out=tmp_path, force=True)
    assert (art.path / "artifact.json").is_file() and (art.path / "weights.safetensors").is_file()


def test_a_zip_made_at_the_output_while_bundling_is_untouched(tiny_llama, tmp_path, monkeypatch):
    from edgekit.bundling import zipio

    final = tmp_path / "llama-faketarget-fp32.zip"
    real = zipio.write_zip

    def zip_then_someone_writes_final(folder, dest):
        real(folder, dest)
        final.write_bytes(b"someone else's file")

    monkeypatch.setattr(zipio, "write_zip", zip_then_someone_writes_final)
    with pytest.raises(OutputPathError, match=r"\.zip appeared while the bundle was being written"):
        edgekit_bundle(tiny_llama, out=tmp_path, zip=True)
    assert final.read_bytes() == b"someone else's file"
    assert [p.name for p in tmp_path.iterdir()] == [final.name]   # the staging folder is gone


def test_a_full_disk_while_zipping_is_a_clean_error(tiny_llama, tmp_path, monkeypatch):
    import errno

    from edgekit.errors import DiskFullError

    real = zipfile.ZipFile.write
    calls = []

    def fills_up(self, *a, **k):
        calls.append(a)
        if len(calls) > 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(zipfile.ZipFile, "write", fills_up)
    with pytest.raises(DiskFullError, match=r"no space left writing to .*dist \(No space left on device; about "
                                            r"[\d,]+ bytes needed, [\d,]+ bytes free there\)"):
        edgekit_bundle(tiny_llama, out=tmp_path / "dist", zip=True)
    assert list((tmp_path / "dist").iterdir()) == []   # no partial zip, no staging folder


def test_zip_bundles_unpack_under_edgekit_cache_dir(fake_zip, tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEKIT_CACHE", raising=False)
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "ekc"))
    b = Bundle.open(fake_zip)
    assert b.path.is_relative_to(tmp_path / "ekc" / "bundles")


def test_the_old_edgekit_cache_variable_still_works_with_a_warning(fake_zip, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("EDGEKIT_CACHE_DIR", raising=False)
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "old"))
    b = Bundle.open(fake_zip)
    assert b.path.is_relative_to(tmp_path / "old" / "bundles")
    assert "EDGEKIT_CACHE is deprecated" in caplog.text and "EDGEKIT_CACHE_DIR" in caplog.text


def test_an_unwritable_cache_dir_is_a_clean_error(fake_zip, tmp_path, monkeypatch):
    afile = tmp_path / "file"
    afile.write_text("x")
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(afile / "cache"))
    with pytest.raises(OutputPathError, match=r"cannot unpack .*\.zip into the cache folder .*file/cache/bundles "
                                              r"\(Not a directory.*\); set EDGEKIT_CACHE_DIR to a writable folder"):
        Bundle.open(fake_zip)


def test_cli_run_with_a_prompt_that_is_not_utf8(fake_bundle):
    res = subprocess.run([sys.executable, str(HERE / "edgekit_with_fake.py"), "run", str(fake_bundle), "-p",
                          b"\xc3(", "--max-new-tokens", "2"], capture_output=True, timeout=300, check=False,
                         env={**os.environ, "LC_ALL": "C.UTF-8"})
    err = " ".join(res.stderr.decode("utf-8", "replace").split())
    assert res.returncode == 2, err
    assert "PromptError" in err and "byte 0xc3 at byte offset 0 (character 0) is not valid UTF-8" in err


def test_a_max_seq_len_beyond_the_model_is_refused(bundle_copy):
    limit = json.loads((bundle_copy / "manifest.json").read_text())["model"]["max_position_embeddings"]

    def stretch(d):
        d["max_seq_len"] = d["artifact"]["metadata"]["max_seq_len"] = limit * 4
    _edit_manifest(bundle_copy, stretch)
    with pytest.raises(BundleError, match=rf"max_seq_len {limit * 4} is larger than the model's "
                                          rf"max_position_embeddings {limit}; accepted: 2\.\.{limit}"):
        Bundle.open(bundle_copy)


def test_a_max_seq_len_other_than_the_exported_one_is_refused(bundle_copy):
    _edit_manifest(bundle_copy, lambda d: d.update(max_seq_len=100))
    with pytest.raises(BundleError, match=r"max_seq_len 100 differs from the artifact's exported max_seq_len 64"):
        Bundle.open(bundle_copy)


def test_cli_run_on_a_stretched_bundle_exits_2(bundle_copy, capsys):
    from edgekit.cli import main

    def stretch(d):
        d["max_seq_len"] = d["artifact"]["metadata"]["max_seq_len"] = 100_000
    _edit_manifest(bundle_copy, stretch)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", ["edgekit", "run", str(bundle_copy), "-p", "hi", "--max-new-tokens", "2"])
        with pytest.raises(SystemExit) as exit_:
            main()
    err = " ".join(capsys.readouterr().err.split())
    assert exit_.value.code == 2 and "BundleError" in err and "max_seq_len 100000 is larger than" in err
