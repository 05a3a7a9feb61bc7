"""What a bundle promises: its manifest is pinned (and optionally signed), every path it names is a hashed file inside
it, a zip unpacks within bounds, and only the bundle's own verified code runs. Tiny fake-target bundles; fast."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from manifest_edit import edit_manifest

from edgekit.bundling import Bundle, zipio
from edgekit.errors import BundleError, MissingDependency
from edgekit.profiling import profile

EVIL_C = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((constructor)) static void on_load(void) {
    const char *p = getenv("EDGEKIT_EVIL_MARKER");
    FILE *f = fopen(p ? p : "/tmp/edgekit-evil-marker", "w");
    if (f) { fputs("library loaded\n", f); fclose(f); }
}
"""
EVIL_SESSION = """import os, pathlib
pathlib.Path(os.environ.get("EDGEKIT_EVIL_MARKER", "/tmp/edgekit-evil-marker")).write_text("session imported")
def open_session(folder, threads=None, profile_dir=None):
    raise RuntimeError("evil")
"""


def _cli(argv: list[str], monkeypatch) -> int:
    from edgekit.cli import main

    monkeypatch.setattr(sys, "argv", ["edgekit", *argv])
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code


# ---- the pin -----------------------------------------------------------------------------------------------------
def test_the_pin_is_written_and_sha256sum_checks_it(fake_bundle):
    pin = (fake_bundle / "manifest.sha256").read_text()
    assert pin == f"{hashlib.sha256((fake_bundle / 'manifest.json').read_bytes()).hexdigest()}  manifest.json\n"
    assert "manifest.sha256" not in Bundle.open(fake_bundle).manifest["files"]
    if shutil.which("sha256sum"):
        subprocess.run(["sha256sum", "--quiet", "-c", "manifest.sha256"], cwd=fake_bundle, check=True)


def test_a_tampered_manifest_is_refused(bundle_copy, monkeypatch, capsys):
    edit_manifest(bundle_copy, lambda d: d["generation"].update(max_new_tokens=9999), repin=False)
    with pytest.raises(BundleError, match=r"manifest\.json does not match .*manifest\.sha256 .*re-bundle it"):
        Bundle.open(bundle_copy)
    assert _cli(["verify", str(bundle_copy)], monkeypatch) == 2
    assert "does not match" in " ".join(capsys.readouterr().err.split())


def test_a_missing_pin_is_refused(bundle_copy):
    (bundle_copy / "manifest.sha256").unlink()
    with pytest.raises(BundleError, match=r"has no manifest\.sha256, .*re-bundle it with this edgekit"):
        Bundle.open(bundle_copy)


def test_a_malformed_pin_is_refused(bundle_copy):
    (bundle_copy / "manifest.sha256").write_text("deadbeef\n")
    with pytest.raises(BundleError, match=r"manifest\.sha256 is not '<64 hex digits>  manifest\.json'"):
        Bundle.open(bundle_copy)


# ---- paths -------------------------------------------------------------------------------------------------------
def _set(dotted: str, value):
    def change(doc):
        *parents, last = dotted.split(".")
        cur = doc
        for p in parents:
            if not isinstance(cur.get(p), dict):
                cur[p] = {}
            cur = cur[p]
        cur[last] = value
    return change


PATH_FIELDS = [
    ("artifact.main", "{v}"), ("artifact.files", ["{v}"]), ("io.main", "{v}"), ("tokenizer.file", "{v}"),
    ("tokenizer.chat_template_file", "{v}"), ("tokenizer.config_file", "{v}"),
    ("artifact.metadata.custom_op_libraries", ["{v}"]), ("kernels", ["{v}"]), ("runner.file", "{v}"),
    ("artifact.metadata.io.main", "{v}"),
]
OUTSIDE = ["../evil.so", "../../outside/evil.so", "/tmp/edgekit-evil.so", "kernels/../../evil.so"]


def _fill(template, v):
    return [t.format(v=v) for t in template] if isinstance(template, list) else template.format(v=v)


@pytest.mark.parametrize("value", OUTSIDE)
@pytest.mark.parametrize(("field", "template"), PATH_FIELDS)
def test_a_path_outside_the_bundle_is_refused(bundle_copy, field, template, value):
    edit_manifest(bundle_copy, _set(field, _fill(template, value)))
    with pytest.raises(BundleError) as e:
        Bundle.open(bundle_copy)
    msg = str(e.value)
    assert f"{field}" in msg and repr(value) in msg, msg


@pytest.mark.parametrize(("value", "why"), [
    ("./weights.safetensors", "not a normalised relative path"), ("kernels//fake_kernel.cpp", "not a normalised"),
    ("kernels\\fake_kernel.cpp", "not a normalised"), ("not-hashed.so", "not an entry of the manifest's 'files'")])
def test_an_unnormalised_or_unhashed_path_is_refused(bundle_copy, value, why):
    import re

    edit_manifest(bundle_copy, _set("artifact.metadata.custom_op_libraries", [value]))
    with pytest.raises(BundleError, match=re.escape(f"artifact.metadata.custom_op_libraries[0] is {value!r}, which "
                                                    f"is {why}")):
        Bundle.open(bundle_copy)


def test_a_symlink_out_of_the_bundle_is_refused(bundle_copy, tmp_path):
    evil = tmp_path / "outside.so"
    evil.write_bytes(b"\x7fELF")
    (bundle_copy / "kernels" / "evil.so").symlink_to(evil)
    edit_manifest(bundle_copy, _set("artifact.metadata.custom_op_libraries", ["kernels/evil.so"]))
    with pytest.raises(BundleError, match=r"symbolic link kernels/evil\.so"):
        Bundle.open(bundle_copy)


def test_paths_resolve_through_symlinks(bundle_copy, tmp_path):
    """check_paths itself resolves links (verify refuses any link before, so this is the second line)."""
    from edgekit.bundling.paths import check_paths

    (tmp_path / "elsewhere").mkdir()
    (bundle_copy / "kernels" / "lib").symlink_to(tmp_path / "elsewhere")
    doc = json.loads((bundle_copy / "manifest.json").read_text())
    doc["files"]["kernels/lib/evil.so"] = {"sha256": "0" * 64, "bytes": 0}
    doc["artifact"]["metadata"]["custom_op_libraries"] = ["kernels/lib/evil.so"]
    with pytest.raises(BundleError, match=r"files is 'kernels/lib/evil\.so', which resolves outside the bundle"):
        check_paths(bundle_copy, doc)


# ---- code from outside the bundle never runs ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def evil_code(tmp_path_factory) -> dict[str, Path]:
    """A native library and a session module that write $EDGEKIT_EVIL_MARKER when loaded, outside any bundle."""
    if not shutil.which("cc"):
        pytest.fail("a C compiler (cc) is needed to build the marker library")
    d = tmp_path_factory.mktemp("outside")
    (d / "evil.c").write_text(EVIL_C)
    for name in ("evil.so", "control.so"):
        subprocess.run(["cc", "-shared", "-fPIC", "-o", str(d / name), str(d / "evil.c")], check=True)
    (d / "evil_session.py").write_text(EVIL_SESSION)
    return {"lib": d / "evil.so", "control": d / "control.so", "session": d / "evil_session.py"}


def test_the_marker_code_does_write_its_marker(evil_code, tmp_path, monkeypatch):
    """Control: loading the library the way the target would (and importing the session) writes the marker, so
    the tests below would see it if verification let them through."""
    import fake_target

    from edgekit.targets.base import Artifact

    marker = tmp_path / "marker"
    monkeypatch.setenv("EDGEKIT_EVIL_MARKER", str(marker))
    fake_target.load_libraries(Artifact(path=tmp_path, target="faketarget", files=[],
                                        metadata={"custom_op_libraries": [str(evil_code["control"])]}))
    assert marker.read_text() == "library loaded\n"
    marker.unlink()
    subprocess.run([sys.executable, str(evil_code["session"])], check=True, env={"EDGEKIT_EVIL_MARKER": str(marker)})
    assert marker.read_text() == "session imported"


def _point_outside(bundle: Path, evil_code: dict[str, Path], relative: bool) -> None:
    def rel(p: Path) -> str:
        import os

        return os.path.relpath(p, bundle) if relative else str(p)

    def change(doc):
        doc["artifact"]["metadata"]["custom_op_libraries"] = [rel(evil_code["lib"])]
        doc["runner"] = {"file": rel(evil_code["session"]), "entry": "open_session"}
    edit_manifest(bundle, change)


@pytest.mark.parametrize("relative", [True, False], ids=["relative", "absolute"])
def test_outside_code_never_loads(bundle_copy, evil_code, tmp_path, monkeypatch, relative):
    marker = tmp_path / "marker"
    monkeypatch.setenv("EDGEKIT_EVIL_MARKER", str(marker))
    _point_outside(bundle_copy, evil_code, relative)
    with pytest.raises(BundleError, match=r"runner\.file is '(\.\./|/)"):
        Bundle.open(bundle_copy).session()
    assert _cli(["run", str(bundle_copy), "-p", "hi", "--max-new-tokens", "2"], monkeypatch) == 2
    assert _cli(["verify", str(bundle_copy)], monkeypatch) == 2
    with pytest.raises(BundleError, match=r"runner\.file is '(\.\./|/)"):
        profile(bundle_copy, "local", prompt_lengths=(4,), decode_tokens=2, runs=1, warmup=0, history=False)
    assert not marker.exists()


@pytest.mark.parametrize("relative", [True, False], ids=["relative", "absolute"])
def test_an_outside_library_alone_never_loads(bundle_copy, evil_code, tmp_path, monkeypatch, relative):
    import os

    marker = tmp_path / "marker"
    monkeypatch.setenv("EDGEKIT_EVIL_MARKER", str(marker))
    lib = os.path.relpath(evil_code["lib"], bundle_copy) if relative else str(evil_code["lib"])
    edit_manifest(bundle_copy, _set("artifact.metadata.custom_op_libraries", [lib]))
    with pytest.raises(BundleError, match=r"custom_op_libraries\[0\] is '(\.\./|/)"):
        Bundle.open(bundle_copy).session()
    assert _cli(["run", str(bundle_copy), "-p", "hi", "--max-new-tokens", "2"], monkeypatch) == 2
    with pytest.raises(BundleError, match=r"custom_op_libraries\[0\]"):
        profile(bundle_copy, "local", prompt_lengths=(4,), decode_tokens=2, runs=1, warmup=0, history=False)
    assert not marker.exists()


def test_outside_session_alone_never_loads(bundle_copy, evil_code, tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    monkeypatch.setenv("EDGEKIT_EVIL_MARKER", str(marker))
    edit_manifest(bundle_copy, lambda d: d.update(runner={"file": str(evil_code["session"]), "entry": "open_session"}))
    with pytest.raises(BundleError, match=r"runner\.file is '/"):
        profile(bundle_copy, "local", prompt_lengths=(4,), decode_tokens=2, runs=1, warmup=0, history=False)
    assert not marker.exists()


def test_profile_imports_the_bundles_own_hashed_session(bundle_copy):
    from edgekit.profiling.bundles import load_session_module, open_bundle

    ref = open_bundle(bundle_copy)
    module = load_session_module(ref)
    assert Path(module.__file__) == bundle_copy / "fake_standalone.py"
    (bundle_copy / "fake_standalone.py").write_text(EVIL_SESSION)   # swapped after verification
    with pytest.raises(BundleError, match=r"fake_standalone\.py changed after the bundle was verified"):
        load_session_module(ref)


def test_an_artifact_folder_never_runs_a_session_found_in_it(tmp_path):
    """An export folder's hashes cover only its artifact files: the installed target's session runs."""
    import fake_target

    from edgekit.profiling.bundles import BundleRef, standalone_module

    (tmp_path / "standalone_session.py").write_text(EVIL_SESSION)
    ref = BundleRef(tmp_path, tmp_path, {"target": "faketarget"}, "0" * 64, "artifact")
    assert standalone_module(ref) == fake_target.STANDALONE


# ---- signatures --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    d = tmp_path_factory.mktemp("keys")
    out = {}
    for who in ("alice", "mallory"):
        key = Ed25519PrivateKey.generate()
        (d / f"{who}.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
        (d / f"{who}.pub.pem").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        out[who], out[f"{who}.pub"] = d / f"{who}.pem", d / f"{who}.pub.pem"
    return out


@pytest.fixture(scope="module")
def signed_bundle(checkpoint_dir, keys, tmp_path_factory, with_fake_target) -> Path:
    """Bundled and signed through the CLI (edgekit bundle --sign-key)."""
    from edgekit.cli import main

    out = tmp_path_factory.mktemp("signed")
    argv = ["edgekit", "bundle", str(checkpoint_dir("llama")), "--target", "fake", "--max-seq-len", "32",
            "--no-validate", "-o", str(out), "--sign-key", str(keys["alice"])]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "argv", argv)
        main()
    return out / "llama-faketarget-fp32"


def test_a_good_signature_verifies(signed_bundle, keys, monkeypatch, capsys):
    assert len((signed_bundle / "manifest.sig").read_bytes()) == 64
    b = Bundle.open(signed_bundle, public_key=keys["alice.pub"])
    assert any("manifest.sig valid" in c for c in b.report.checks)
    from edgekit.cli import main

    monkeypatch.setattr(sys, "argv", ["edgekit", "verify", str(signed_bundle), "--public-key", str(keys["alice.pub"])])
    main()
    assert "signature valid" in " ".join(capsys.readouterr().out.split())   # rich wraps at the terminal width


def test_another_keys_signature_is_refused(signed_bundle, keys, monkeypatch):
    with pytest.raises(BundleError, match=r"manifest\.sig is not a valid signature .* by the key .*mallory"):
        Bundle.open(signed_bundle, public_key=keys["mallory.pub"])
    assert _cli(["verify", str(signed_bundle), "--public-key", str(keys["mallory.pub"])], monkeypatch) == 2
    assert _cli(["run", str(signed_bundle), "-p", "hi", "--max-new-tokens", "2", "--public-key",
                 str(keys["mallory.pub"])], monkeypatch) == 2


def test_a_manifest_edited_after_signing_is_refused(signed_bundle, keys, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(signed_bundle, copy)
    edit_manifest(copy, lambda d: d["generation"].update(temperature=2.0))   # re-pinned: only the signature tells
    Bundle.open(copy)
    with pytest.raises(BundleError, match="changed after signing or signed by another key"):
        Bundle.open(copy, public_key=keys["alice.pub"])


def test_a_missing_signature_is_refused(fake_bundle, keys):
    with pytest.raises(BundleError, match=r"has no manifest\.sig but a public key was given"):
        Bundle.open(fake_bundle, public_key=keys["alice.pub"])


def test_a_key_that_is_not_ed25519_pem_is_named(fake_bundle, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    with pytest.raises(BundleError, match=r"bad\.pem is not an unencrypted PEM public key"):
        Bundle.open(fake_bundle, public_key=bad)


def test_without_cryptography_the_options_name_the_extra(fake_bundle, keys, tiny_llama, tmp_path, monkeypatch):
    import edgekit

    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives", None)   # import fails as if not installed
    with pytest.raises(MissingDependency, match=r"pip install edgekit\[sign\]"):
        Bundle.open(fake_bundle, public_key=keys["alice.pub"])
    with pytest.raises(MissingDependency, match=r"pip install edgekit\[sign\]"):
        edgekit.bundle(tiny_llama, target="fake", out=tmp_path / "dist", sign_key=keys["alice"])
    assert not (tmp_path / "dist").exists()   # refused before any export
    Bundle.open(fake_bundle)   # unsigned use needs nothing extra


# ---- zips --------------------------------------------------------------------------------------------------------
def _cache_files(cache_dir: Path) -> list[Path]:
    return [p for p in cache_dir.rglob("*") if p.is_file()] if cache_dir.exists() else []


def _zip_of(folder: Path, dest: Path, extra: dict[str, bytes] | None = None, level: int = 1) -> Path:
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, f"b/{p.relative_to(folder).as_posix()}")
        for name, data in (extra or {}).items():
            zf.writestr(f"b/{name}", data)
    return dest


def test_too_many_entries_are_refused(fake_bundle, tmp_path, cache_dir, monkeypatch):
    monkeypatch.setattr(zipio, "MAX_ENTRIES", 40)
    z = _zip_of(fake_bundle, tmp_path / "many.zip", {f"pad/{i}.txt": b"x" for i in range(40)})
    with pytest.raises(BundleError, match=r"many\.zip has \d+ entries, more than a bundle holds \(at most 40\)"):
        Bundle.open(z)
    assert _cache_files(cache_dir) == []


def test_too_many_inflated_bytes_are_refused(fake_bundle, tmp_path, cache_dir, monkeypatch):
    monkeypatch.setattr(zipio, "MAX_UNPACKED_BYTES", 1 << 20)
    import os

    z = _zip_of(fake_bundle, tmp_path / "big.zip", {"pad.bin": os.urandom(2 << 20)})
    with pytest.raises(BundleError, match=r"big\.zip claims \d+ unpacked bytes \(at most 1048576\)"):
        Bundle.open(z)
    assert _cache_files(cache_dir) == []


def test_a_high_ratio_entry_is_refused(fake_bundle, tmp_path, cache_dir):
    z = _zip_of(fake_bundle, tmp_path / "bomb.zip", {"zeros.bin": bytes(8 << 20)}, level=9)   # ~1000:1
    with pytest.raises(BundleError, match=rf"entry 'b/zeros\.bin' inflates .* \(ratio above {zipio.MAX_RATIO}\)"):
        Bundle.open(z)
    assert _cache_files(cache_dir) == []


def test_inflated_bytes_are_counted_whatever_the_headers_say(monkeypatch, tmp_path):
    monkeypatch.setattr(zipio, "MAX_UNPACKED_BYTES", 10)
    with pytest.raises(BundleError, match="inflates to more than 10 bytes"):
        zipio._copy_bounded(io.BytesIO(b"x" * 11), io.BytesIO(), 0, tmp_path / "z.zip")


def test_an_unpacked_copy_that_fails_verification_is_removed(fake_bundle, tmp_path, cache_dir):
    bad = tmp_path / "bad"
    shutil.copytree(fake_bundle, bad)
    (bad / "config.json").write_text("{}")           # a file changed: the hash check fails after unpacking
    z = _zip_of(bad, tmp_path / "bad.zip")
    with pytest.raises(BundleError, match=r"changed after bundling: config\.json"):
        Bundle.open(z)
    assert _cache_files(cache_dir) == [] and list((cache_dir / "bundles").iterdir()) == []


def test_a_cached_copy_tampered_later_is_removed_and_unpacked_again(fake_zip, cache_dir):
    first = Bundle.open(fake_zip)
    assert first.path.is_relative_to(cache_dir)
    (first.path / "README.md").write_text("tampered in the cache")
    with pytest.raises(BundleError, match=r"README\.md"):
        Bundle.open(fake_zip)
    assert not first.path.exists()
    again = Bundle.open(fake_zip)                     # a fresh, verified copy
    assert again.path == first.path and again.report.files_checked == first.report.files_checked


def test_an_odd_zip_name_unpacks_inside_the_cache(fake_bundle, tmp_path, cache_dir):
    z = tmp_path / "...zip"                           # stem '..': must not become the cache folder's parent
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(fake_bundle.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(fake_bundle).as_posix())
    b = Bundle.open(z)
    assert b.path.resolve().is_relative_to(cache_dir.resolve()) and b.path.parent.parent == cache_dir / "bundles"
    assert [p for p in tmp_path.iterdir() if p.name not in ("...zip", "cache")] == []
