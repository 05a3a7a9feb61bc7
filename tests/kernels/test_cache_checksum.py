"""Cached kernel builds carry a checksum sidecar (sha256 + size): a cache hit is checked, and a truncated or altered
library is logged and rebuilt before anything loads it (a truncated .so faulted every later run with SIGBUS). The
real ExecuTorch and ONNX Runtime libraries: truncated in a private cache, then built and loaded in a new process."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.errors import ExportError
from edgekit.kernels import build

# a stand-in compiler: writes 4096 fixed bytes to the output path and counts its runs in a file beside the cache
FAKE_CC = ("import sys, pathlib; c = pathlib.Path(sys.argv[2]); c.write_text(str(int(c.read_text() or 0) + 1) "
           "if c.exists() else '1'); pathlib.Path(sys.argv[1]).write_bytes(bytes(range(256)) * 16)")


@pytest.fixture
def fake(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "cache"))
    counter = tmp_path / "compiles"

    def make(**kw) -> Path:
        return build.build_cached("libfake.so", "k1", lambda out: [sys.executable, "-c", FAKE_CC, out, counter], **kw)

    make.compiles = lambda: int(counter.read_text()) if counter.exists() else 0
    return make


def test_a_build_writes_its_checksum_and_a_hit_does_not_recompile(fake):
    lib = fake()
    side = json.loads(lib.with_name(lib.name + build.SIDECAR_SUFFIX).read_text())
    assert side == {"sha256": build.file_digest(lib), "bytes": 4096}
    assert fake() == lib and fake.compiles() == 1
    assert sorted(p.name for p in lib.parent.iterdir()) == [".lock", "libfake.so", "libfake.so.sha256.json"]


@pytest.mark.parametrize("damage", ["truncated", "altered", "no sidecar", "bad sidecar", "lib removed"])
def test_a_damaged_cache_entry_is_logged_and_rebuilt(fake, damage, caplog):
    lib = fake()
    good = lib.read_bytes()
    sidecar = lib.with_name(lib.name + build.SIDECAR_SUFFIX)
    if damage == "truncated":
        lib.write_bytes(good[:1000])
    elif damage == "altered":
        lib.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))   # same size, other contents
    elif damage == "no sidecar":
        sidecar.unlink()
    elif damage == "bad sidecar":
        sidecar.write_text("{not json")
    else:
        lib.unlink()
    with caplog.at_level(logging.WARNING, logger="edgekit.kernels.build"):
        again = fake()
    assert again == lib and lib.read_bytes() == good and fake.compiles() == 2
    assert build.cached_problem(lib) is None
    assert any("rebuilding" in r.getMessage() and str(lib) in r.getMessage() for r in caplog.records)


def test_an_unusable_cache_dir_is_an_export_error(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "file"))
    with pytest.raises(ExportError, match="kernel cache folder .*EDGEKIT_CACHE_DIR"):
        build.build_cached("libfake.so", "k1", lambda out: ["true"])


# a new process builds (checking the cache) and loads each library, then says how it went
LOGGING = "import logging; logging.basicConfig(level=logging.WARNING); "
LOAD = {
    "executorch": LOGGING + "from edgekit_executorch.kernels import direct; print(direct.isa())",
    "onnx": LOGGING + ("import onnxruntime as ort; from edgekit_onnx.kernels import build_library; "
                       "ort.SessionOptions().register_custom_ops_library(str(build_library())); print('registered')"),
}


def cached_build(target: str) -> Path:
    if target == "executorch":
        pytest.importorskip("executorch")
        from edgekit_executorch.kernels.build import build_kernel_library

        return build_kernel_library()
    from edgekit_onnx.kernels import build_library

    return build_library()


@pytest.mark.parametrize("target", ["executorch", "onnx"])
def test_a_truncated_real_library_is_rebuilt_not_loaded(target, tmp_path):
    from edgekit_onnx.kernels import headers

    real = cached_build(target)   # the verified build in the user's cache: copied, never touched
    cache = tmp_path / "cache"
    private = cache / "kernels" / real.parent.name
    shutil.copytree(real.parent, private, ignore=shutil.ignore_patterns(".lock"))
    lib = private / real.name
    lib.write_bytes(real.read_bytes()[: real.stat().st_size // 3])
    env = {**os.environ, "EDGEKIT_CACHE_DIR": str(cache), "EDGEKIT_ORT_INCLUDE_DIR": str(headers.include_dir())}
    r = subprocess.run([sys.executable, "-c", LOAD[target]], env=env, capture_output=True, text=True, timeout=300,
                       check=False)
    assert r.returncode == 0, f"rc {r.returncode}: {r.stderr[-3000:]}"
    assert "rebuilding" in r.stderr and "truncated" in r.stderr
    assert lib.stat().st_size == real.stat().st_size and build.cached_problem(lib) is None
