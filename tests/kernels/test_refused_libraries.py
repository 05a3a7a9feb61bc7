"""A kernel library named by artifact.json or manifest.json that is absolute, escapes the folder, or is a symlink
to outside is refused by each standalone session (ExecuTorch, ONNX), by the host sessions (RefusedFileError) and by
the IoT sample app, before anything is loaded: the library's constructor, which writes a marker file at dlopen,
never runs."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.errors import RefusedFileError

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "iot" / "chat.py"
EVIL_SOURCE = Path(__file__).with_name("evil_kernel.cpp")
ET_LIB = "kernels/libedgekit_kernels.so"
HOW = ("escaping", "absolute", "symlink")


@pytest.fixture(scope="module")
def evil_lib(tmp_path_factory) -> Path:
    from edgekit.kernels.build import find_compiler

    out = tmp_path_factory.mktemp("outside") / "libevil.so"
    subprocess.run([find_compiler(), "-shared", "-fPIC", str(EVIL_SOURCE), "-o", str(out)], check=True, timeout=120)
    return out


@pytest.fixture
def marker(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "evil-library-was-loaded"
    monkeypatch.setenv("EDGEKIT_TEST_MARKER", str(path))   # os.environ -> setenv: the library's getenv sees it
    return path


@pytest.fixture(scope="module")
def onnx_art(tiny_model, tmp_path_factory):
    import edgekit

    return edgekit.export(tiny_model("llama"), "iot", quant="fp32", max_seq_len=32,
                          out=tmp_path_factory.mktemp("onnx") / "artifact", show_progress=False)


@pytest.fixture(scope="module")
def folders(et_int8, onnx_art, tmp_path_factory):
    """{(target, kind): folder}: each export folder and its bundle."""
    import edgekit

    dist = tmp_path_factory.mktemp("dist")
    return {("executorch", "artifact"): et_int8.path, ("onnx", "artifact"): onnx_art.path,
            ("executorch", "bundle"): edgekit.bundle(et_int8, out=dist, show_progress=False).path,
            ("onnx", "bundle"): edgekit.bundle(onnx_art, out=dist, show_progress=False).path}


def pointing_outside(src: Path, dst: Path, evil: Path, how: str) -> Path:
    """A copy of the folder `src` at `dst` whose metadata lists the library `evil` (outside it), `how` named."""
    shutil.copytree(src, dst)
    if how == "escaping":
        name = os.path.relpath(evil, dst)
    elif how == "absolute":
        name = str(evil)
    else:
        (dst / "kernels").mkdir(exist_ok=True)
        (dst / "kernels" / "libedgekit_extra.so").symlink_to(evil)
        name = "kernels/libedgekit_extra.so"
    doc_file = dst / ("artifact.json" if (dst / "artifact.json").exists() else "manifest.json")
    doc = json.loads(doc_file.read_text())
    meta = doc["metadata"] if doc_file.name == "artifact.json" else doc["artifact"]["metadata"]
    meta["custom_op_libraries"] = [*meta.get("custom_op_libraries", []), name]   # after any legitimate one
    doc_file.write_text(json.dumps(doc))
    return dst


def standalone(target: str):
    if target == "executorch":
        from edgekit_executorch import standalone_session
    else:
        from edgekit_onnx import standalone_session
    return standalone_session


def test_the_marker_library_does_write_its_marker_when_loaded(evil_lib, marker):
    code = "import ctypes, sys; ctypes.CDLL(sys.argv[1])"
    subprocess.run([sys.executable, "-c", code, str(evil_lib)], check=True, timeout=60)
    assert marker.read_text() == "loaded\n"   # so its absence below means the library never ran


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("kind", ["artifact", "bundle"])
@pytest.mark.parametrize("target", ["executorch", "onnx"])
def test_each_standalone_session_refuses_a_library_outside_the_folder(target, kind, how, folders, evil_lib,
                                                                      marker, tmp_path):
    folder = pointing_outside(folders[target, kind], tmp_path / "copy", evil_lib, how)
    mod = standalone(target)
    with pytest.raises(mod.RefusedFileError, match="outside the artifact folder|absolute path"):
        mod.open_session(folder)
    assert not marker.exists()


@pytest.mark.parametrize("target", ["executorch", "onnx"])
def test_the_host_sessions_raise_refused_file_error(target, folders, evil_lib, marker, tmp_path):
    from edgekit.targets.base import Artifact
    from edgekit.targets.registry import get_target

    folder = pointing_outside(folders[target, "artifact"], tmp_path / "copy", evil_lib, "escaping")
    with pytest.raises(RefusedFileError, match=r"custom_op_libraries entry '\.\./.*libevil\.so'.*outside"):
        get_target(target).session(Artifact.load(folder))
    assert not marker.exists()


@pytest.mark.parametrize("how", HOW)
def test_the_iot_sample_refuses_it(how, folders, evil_lib, marker, tmp_path):
    folder = pointing_outside(folders["onnx", "bundle"], tmp_path / "copy", evil_lib, how)
    r = subprocess.run([sys.executable, str(SAMPLE), str(folder), "--prompt", "Hi", "--max-new-tokens", "2"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode != 0 and "not a file inside the bundle" in r.stderr, r.stderr[-2000:]
    assert not marker.exists()


def test_an_altered_library_in_the_folder_is_refused(folders, marker, tmp_path):
    """Inside the folder but not the file the export recorded (artifact.json's file_hashes)."""
    from edgekit_executorch import standalone_session

    folder = tmp_path / "copy"
    shutil.copytree(folders["executorch", "artifact"], folder)
    lib = folder / ET_LIB
    good = lib.read_bytes()
    lib.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))   # same size, one bit flipped
    with pytest.raises(standalone_session.RefusedFileError, match="not the library the artifact recorded"):
        standalone_session.open_session(folder)
