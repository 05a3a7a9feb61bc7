"""An ExecuTorch export with edgekit's kernels carries its own copy of the kernel library (kernels/, hashed like every
file): its bundle, copied to a fresh HOME with an empty kernel cache and no compiler, runs there through its own
standalone session (edgekit unimportable) and gives the exporter's greedy tokens; two artifacts with identical
kernels run in one process (ExecuTorch aborts on a second registration of the same operators)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from run_standalone import greedy

RUNNER = Path(__file__).with_name("run_standalone.py")
LIB = "kernels/libedgekit_kernels.so"
PROMPT, N_TOKENS = [5, 17, 99, 3, 250, 41, 7], 12


@pytest.fixture(scope="module")
def exporter_tokens(et_int8):
    from edgekit_executorch.target import ExecuTorchTarget

    return greedy(ExecuTorchTarget().session(et_int8), PROMPT, N_TOKENS)


@pytest.fixture(scope="module")
def far_bundle(et_int8, tmp_path_factory):
    """The bundle of et_int8, copied into another machine's stand-in: (bundle folder, env with a fresh HOME)."""
    import edgekit

    made = edgekit.bundle(et_int8, out=tmp_path_factory.mktemp("dist"), show_progress=False)
    far = tmp_path_factory.mktemp("far")
    folder = far / "bundle"
    shutil.copytree(made.path, folder, symlinks=False)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(far / "home"),
           "EDGEKIT_CACHE_DIR": str(far / "cache"), "XDG_CACHE_HOME": str(far / "xdg"),
           "CXX": str(far / "no-compiler")}
    return folder, env


def run_far(folder: Path, env: dict, *folders: Path) -> dict:
    r = subprocess.run([sys.executable, str(RUNNER), str(folder / "standalone_session.py"), str(N_TOKENS),
                        json.dumps(PROMPT), *map(str, folders)], env=env, capture_output=True, text=True,
                       timeout=300, check=False, cwd=env["HOME"] if Path(env["HOME"]).is_dir() else None)
    assert r.returncode == 0, f"rc {r.returncode}\n{r.stderr[-3000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_the_export_ships_its_kernels_by_relative_path(et_int8):
    from edgekit.kernels.build import cache_root

    meta = et_int8.metadata
    assert meta["custom_op_libraries"] == [LIB] and LIB in et_int8.files
    assert (et_int8.path / LIB).is_file() and meta["file_hashes"][LIB]["bytes"] == (et_int8.path / LIB).stat().st_size
    doc = (et_int8.path / "artifact.json").read_text()
    assert str(cache_root()) not in doc and str(Path.home()) not in doc


def test_the_bundle_carries_and_hashes_the_library(far_bundle):
    from edgekit.hashing import file_sha256

    folder, _ = far_bundle
    m = json.loads((folder / "manifest.json").read_text())
    assert m["artifact"]["metadata"]["custom_op_libraries"] == [LIB] and LIB in m["artifact"]["files"]
    assert m["kernels"] == [LIB]   # what an app build needs, where it already is (not a second copy)
    assert m["files"][LIB]["sha256"] == file_sha256(folder / LIB)
    assert "/.cache/" not in (folder / "manifest.json").read_text()


def test_a_fresh_home_without_cache_or_compiler_gives_the_exporters_tokens(far_bundle, exporter_tokens):
    folder, env = far_bundle
    got = run_far(folder, env, folder)
    assert got["ids"] == [exporter_tokens] and len(exporter_tokens) == N_TOKENS
    assert got["libraries"] == 1
    assert not Path(env["EDGEKIT_CACHE_DIR"]).exists() and not Path(env["XDG_CACHE_HOME"]).exists()


def test_two_artifacts_with_identical_kernels_run_in_one_process(far_bundle, et_int8, exporter_tokens, tmp_path):
    folder, env = far_bundle
    second = tmp_path / "second"
    shutil.copytree(et_int8.path, second)   # the export folder: the same library bytes at another path
    got = run_far(folder, env, folder, second, folder)
    assert got["ids"] == [exporter_tokens] * 3
    assert got["libraries"] == 1   # loaded once: the second copy's content hash was loaded already


def test_an_artifact_naming_a_library_outside_its_files_is_not_bundled(et_int8, tmp_path):
    import dataclasses

    from edgekit_executorch.target import ExecuTorchTarget

    from edgekit.errors import RefusedFileError

    old = dataclasses.replace(et_int8, metadata={**et_int8.metadata, "custom_op_libraries": [str(tmp_path / "x.so")]})
    with pytest.raises(RefusedFileError, match="outside its files.*export it again"):
        ExecuTorchTarget().device_assets(old)


def test_loading_both_copies_by_path_would_abort(far_bundle, et_int8):
    """Why the loader keys on content: dlopen of a second copy registers every operator again, and ExecuTorch
    aborts the process. (If this ever stops aborting, the de-duplication is merely harmless.)"""
    folder, env = far_bundle
    code = ("import ctypes, sys; from executorch.extension.pybindings import portable_lib; "
            "[ctypes.CDLL(p, mode=ctypes.RTLD_GLOBAL) for p in sys.argv[1:]]")
    r = subprocess.run([sys.executable, "-c", code, str(folder / LIB), str(et_int8.path / LIB)], env=env,
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == -6 and "Re-registering edgekit::" in r.stderr, (r.returncode, r.stderr[-2000:])
