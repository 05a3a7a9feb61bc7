"""Bad input and failure paths: unsupported schemes/options, >2 GB weights -> external data, unwritable output,
interrupted export; plus the session's in-place cache, chunked prefill, profiling and the CLI."""
from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from edgekit_onnx import serialize
from edgekit_onnx.builder import estimate_initializer_bytes
from edgekit_onnx.quant import plan_for

import edgekit
from edgekit.errors import OutputPathError, UnsupportedOption

MAX_SEQ_LEN = 64


@pytest.mark.parametrize("kwargs, message", [
    ({"quant": "w8"}, "quant scheme 'w8' is not supported by target 'onnx' ('w8' is a shared scheme: 8-bit"),
    ({"quant": "int4", "block_size": 48}, "block_size 48 is not supported; supported: 32, 64, 128 (option of target 'onnx')"),
    ({"quant": "int4", "accuracy_level": 2}, "accuracy_level 2 is not supported; supported: 0, 1, 4"),
    ({"quant": "int4", "embedding_bits": 2}, "embedding_bits 2 is not supported; supported: 4, 8"),
    ({"quant": "fp32", "block_size": 32}, "apply to quant 'int4' only"),
    ({"quant": "int4", "kv_cache": "int4"}, "kv cache 'int4' is not supported by target 'onnx'; supported: fp32, int8"),
    ({"quant": "int4", "group": 32}, "option(s) group are not known to target 'onnx'"),
    ({"quant": "int4", "external_data": "never"}, "external_data 'never' is not supported; supported: auto, always"),
    ({"quant": "int4", "linear_kernel": "xnnpack"}, ("linear_kernel 'xnnpack' is not supported; supported: mlas, "
                                                     "edgekit (option of target 'onnx')")),
    ({"quant": "fp32", "linear_kernel": "edgekit"}, "linear_kernel 'edgekit' runs int4 linears: it needs quant 'int4'"),
    ({"quant": "int4", "linear_kernel": "edgekit", "block_size": 128},   # the tiny llama is 64 wide, 160 inner
     ("block_size=128 does not divide every linear's input width (64, 160), which linear_kernel 'edgekit' needs; "
      "accepted here: 32")),
])
def test_unsupported_schemes_and_options_are_named(tiny_model, tmp_path, kwargs, message):
    out = tmp_path / "a"
    with pytest.raises(UnsupportedOption, match=message.replace("(", r"\(").replace(")", r"\)")):
        edgekit.export(tiny_model("llama"), "iot", out=out, max_seq_len=MAX_SEQ_LEN, show_progress=False, **kwargs)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_weights_over_2gb_choose_external_data(tiny_model):
    """A config whose fp32 weights pass 2 GB (never materialised: the decision is made from the config up front)."""
    cfg = dataclasses.replace(tiny_model("llama").config, vocab_size=300_000, hidden_size=1024, num_layers=2,
                              intermediate_size=4096, num_heads=8, num_kv_heads=2, head_dim=128)
    fp32 = estimate_initializer_bytes(cfg, plan_for("fp32", {}))
    assert fp32 > 2**31 and serialize.needs_external_data(fp32)
    int4 = estimate_initializer_bytes(cfg, plan_for("int4", {}))
    assert int4 < 2**29 and not serialize.needs_external_data(int4)


def test_external_data_is_written_automatically_and_loads(tiny_model, tmp_path, monkeypatch):
    """The same decision with a lowered threshold on a tiny model: the auto path streams the weights to
    model.onnx.data, the artifact lists it, ORT loads it and validation passes."""
    monkeypatch.setattr(serialize, "EXTERNAL_THRESHOLD", 1024)
    art = edgekit.export(tiny_model("qwen2"), "iot", quant="fp32", out=tmp_path / "ext", max_seq_len=MAX_SEQ_LEN,
                         show_progress=False)
    assert art.metadata["external_data"] and "model.onnx.data" in art.files
    data = art.path / "model.onnx.data"
    assert data.stat().st_size > 10 * (art.path / "model.onnx").stat().st_size
    proto = onnx.load(str(art.path / "model.onnx"), load_external_data=False)
    assert sum(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer) > 5
    assert art.metadata["validation"]["max_abs_logit_diff"] <= 1e-4


def test_unwritable_output_folder(tiny_model):
    with pytest.raises(OutputPathError, match="not writable"):
        edgekit.export(tiny_model("llama"), "iot", quant="fp32", out=Path("/proc/edgekit-onnx-test/out"),
                       show_progress=False)


_CHILD = """
import signal, sys, time
# a background shell starts its jobs with SIGINT ignored and Python keeps an inherited SIG_IGN: what Ctrl-C does
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, {tests!r})
import edgekit
from edgekit_onnx import serialize
real = serialize.save_model
def slow_save(model, path):
    files = real(model, path)          # model.onnx is on disk in the staging folder: now get interrupted
    print("MIDWAY", flush=True)
    time.sleep(60)
    return files
serialize.save_model = slow_save
import edgekit_onnx.export as ex
ex.save_model = slow_save
edgekit.export(edgekit.load({ckpt!r}), "iot", quant="int4", out={out!r}, max_seq_len=64, show_progress=False)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_export_leaves_nothing(checkpoint_dir, tmp_path, sig):
    out = tmp_path / "exports" / "model"
    code = _CHILD.format(tests=str(Path(__file__).parent.parent), ckpt=str(checkpoint_dir("llama")), out=str(out))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().strip() == "MIDWAY"
        staging = [p for p in out.parent.iterdir() if ".partial-" in p.name]
        assert staging and (staging[0] / "model.onnx").exists()   # it really was half way
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert not out.exists()
    left = list(out.parent.iterdir())
    if sig == signal.SIGINT:   # KeyboardInterrupt: the staging folder is removed too
        assert left == []
    else:                      # SIGKILL cannot be handled: only the hidden staging folder remains, never `out`
        assert all(p.name.startswith(".model.partial-") for p in left)


def test_session_keeps_cache_in_place_and_chunks_prefill(onnx_export):
    from edgekit_onnx.standalone_session import open_session

    art = onnx_export("qwen2", "fp32")
    tokens = np.arange(3, 17, dtype=np.int64)[None]
    whole = open_session(art.path, threads=1)
    ref = whole.forward(tokens, np.arange(14))
    chunked = open_session(art.path, threads=1)
    ptrs = [v.data_ptr() for v in chunked._cache]
    a = chunked.forward(tokens[:, :9], np.arange(9))
    b = chunked.forward(tokens[:, 9:], np.arange(9, 14))
    assert np.abs(np.concatenate([a, b], axis=1) - ref).max() < 1e-4
    assert [v.data_ptr() for v in chunked._cache] == ptrs              # same buffers: GQA wrote in place
    assert chunked.binding.get_outputs()[0].data_ptr() == ptrs[0]      # present.0.key IS past_key_values.0.key
    chunked.reset()                                                     # rewind: stale rows are never read
    assert np.abs(chunked.forward(tokens, np.arange(14)) - ref).max() < 1e-4
    with pytest.raises(ValueError, match="consecutive"):
        chunked.forward(tokens[:, :2], np.array([20, 22]))


def test_op_profile_from_ort_trace(onnx_export, tmp_path):
    from edgekit.targets.registry import get_target

    art = onnx_export("llama", "int4")
    session = get_target("onnx").session(art, threads=1, profile_dir=str(tmp_path))
    session.forward(np.array([[1, 2, 3]], dtype=np.int64), np.arange(3))
    session.forward(np.array([[4]], dtype=np.int64), np.array([3]))
    rows = session.op_profile()
    by_type = {r["op_type"] for r in rows}
    assert {"GroupQueryAttention", "MatMulNBits", "SkipSimplifiedLayerNormalization"} <= by_type
    gqa = [r for r in rows if r["op_type"] == "GroupQueryAttention"]
    assert all(r["calls"] == 2 and r["total_ms"] > 0 for r in gqa) and len(gqa) == 2
    assert list(tmp_path.glob("ort_profile*.json"))


def test_cli_generate_with_iot_target(checkpoint_dir):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    t0 = time.time()
    res = subprocess.run([sys.executable, "-m", "edgekit", "generate", str(checkpoint_dir("qwen2")), "--target", "iot",
                          "--prompt", "def add", "--max-new-tokens", "5"], capture_output=True, text=True, env=env,
                         timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "5 tokens" in res.stdout or "tokens, stop" in res.stdout, res.stdout
    assert time.time() - t0 < 300


# ---- the output path: nothing the user made is ever deleted -------------------------------------------------------
def _export(model, out, **kw):
    return edgekit.export(model, "iot", quant="fp32", out=out, max_seq_len=MAX_SEQ_LEN, validate=False,
                          show_progress=False, **kw)


def test_a_folder_made_at_the_output_while_exporting_is_untouched(tiny_model, tmp_path, monkeypatch):
    """Without --force, a folder the user makes at -o during the export stays as it is; the finished export is kept
    beside it under a name the error gives."""
    out = tmp_path / "out"
    real = serialize.save_model

    def save_then_user_makes_out(model, path):
        files = real(model, path)
        out.mkdir()
        (out / "notes.txt").write_text("mine")
        return files

    monkeypatch.setattr("edgekit_onnx.export.save_model", save_then_user_makes_out)
    with pytest.raises(OutputPathError, match=r"out appeared while the export was being written.*left untouched; "
                                              r"the finished export is kept at .*out\.new-\d+") as e:
        _export(tiny_model("llama"), out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    kept = Path(str(e.value).split("kept at ")[1].split(";")[0].split(". ")[0])
    assert (kept / "artifact.json").is_file() and (kept / "model.onnx").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", kept.name])   # no staging folder left


def test_an_empty_folder_made_at_the_output_is_not_replaced(tiny_model, tmp_path, monkeypatch):
    """os.rename replaces an empty folder silently; the placement must not."""
    out = tmp_path / "out"
    real = serialize.save_model
    monkeypatch.setattr("edgekit_onnx.export.save_model", lambda m, p: (out.mkdir(), real(m, p))[1])
    with pytest.raises(OutputPathError, match="appeared while the export"):
        _export(tiny_model("llama"), out)
    assert out.is_dir() and list(out.iterdir()) == []


def test_force_replaces_an_earlier_export(tiny_model, tmp_path):
    out = tmp_path / "out"
    _export(tiny_model("llama"), out)
    (out / "stale.txt").write_text("from before")
    art = _export(tiny_model("llama"), out, force=True)
    assert art.path == out and (out / "artifact.json").is_file() and not (out / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]   # no staging folder or old copy left


def test_force_refuses_a_folder_that_is_not_an_export(tiny_model, tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "a.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(OutputPathError, match=r"photos exists and is not an edgekit output \(no artifact\.json or "
                                              r"manifest\.json\); --force replaces only an earlier export or bundle"):
        _export(tiny_model("llama"), out, force=True)
    assert [p.name for p in out.iterdir()] == ["a.jpg"] and [p.name for p in tmp_path.iterdir()] == ["photos"]


def test_force_never_replaces_the_checkpoint_being_read(checkpoint_dir, tmp_path):
    import shutil

    ckpt = shutil.copytree(checkpoint_dir("llama"), tmp_path / "ckpt")
    before = sorted(p.name for p in ckpt.iterdir())
    (ckpt / "artifact.json").write_text('{"target": "onnx", "files": [], "metadata": {}}')   # looks like an export
    with pytest.raises(OutputPathError, match=r"ckpt is the checkpoint being read; --force never replaces it"):
        _export(ckpt, ckpt, force=True)
    with pytest.raises(OutputPathError, match=r"is a folder above the checkpoint being read \(.*ckpt\)"):
        _export(ckpt, tmp_path, force=True)
    assert sorted(p.name for p in ckpt.iterdir()) == sorted([*before, "artifact.json"])


def test_force_never_replaces_the_current_folder(tiny_model, tmp_path, monkeypatch):
    (tmp_path / "artifact.json").write_text('{"target": "onnx", "files": [], "metadata": {}}')
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "keep.txt").write_text("mine")
    monkeypatch.chdir(tmp_path / "work")
    with pytest.raises(OutputPathError, match=r"^\. is the current folder; --force never replaces it"):
        _export(tiny_model("llama"), ".", force=True)
    with pytest.raises(OutputPathError, match=r"is a folder above the current folder"):
        _export(tiny_model("llama"), "..", force=True)
    assert (tmp_path / "work" / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact.json", "work"]


_RACER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
import edgekit
import edgekit_onnx.export as ex
from edgekit.errors import OutputPathError
real = ex.save_model
def wait_for_go(model, path):   # both runs are past the up-front check, mid-export: finish together
    files = real(model, path)
    print("MIDWAY", flush=True)
    while not Path({go!r}).exists():
        time.sleep(0.02)
    return files
ex.save_model = wait_for_go
try:
    edgekit.export({ckpt!r}, "iot", quant="fp32", out={out!r}, max_seq_len=64, show_progress=False)
    print("OK", flush=True)
except OutputPathError as e:
    print("REFUSED", e, flush=True)
"""


def test_two_concurrent_exports_to_one_output(checkpoint_dir, tmp_path):
    """Two processes export to the same -o at once: one places its artifact, the other is refused (its artifact kept
    beside), never a silent replacement."""
    out, go = tmp_path / "out", tmp_path / "go"
    code = _RACER.format(tests=str(Path(__file__).parent.parent), ckpt=str(checkpoint_dir("llama")), out=str(out),
                         go=str(go))
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "MIDWAY", p.stderr.read()
        go.touch()
        results = [p.communicate(timeout=120)[0].strip() for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert sorted(r.split(" ")[0] for r in results) == ["OK", "REFUSED"], results
    refused = next(r for r in results if r.startswith("REFUSED"))
    assert "out appeared while the export was being written" in refused
    from edgekit.targets.base import Artifact

    winner = Artifact.load(out)
    assert winner.files[0] == "model.onnx" and (out / "model.onnx").is_file()
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("out.new-")]
    assert len(kept) == 1 and (kept[0] / "artifact.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no staging folders left


# ---- a full disk ---------------------------------------------------------------------------------------------------
def test_a_full_disk_during_export_is_a_clean_error(tiny_model, tmp_path, monkeypatch):
    import errno

    from edgekit.errors import DiskFullError

    out = tmp_path / "exports" / "out"

    def half_written_then_full(model, path):
        Path(path).write_bytes(b"\0" * 1000)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("edgekit_onnx.export.save_model", half_written_then_full)
    with pytest.raises(DiskFullError, match=r"no space left writing to .*exports \(No space left on device; "
                                            r"[\d,]+ bytes free there\); nothing was written there"):
        _export(tiny_model("llama"), out)
    assert list(out.parent.iterdir()) == []   # the partial export is gone


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 256 KB tmpfs (the tiny fp32 export needs ~650 KB). Needs root and a kernel that allows the mount."""
    where = tmp_path / "small"
    where.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)], capture_output=True,
                         text=True, check=False)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip()}); the monkeypatched ENOSPC test covers it")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_real_full_tmpfs_during_export(tiny_model, small_tmpfs):
    from edgekit.errors import DiskFullError

    with pytest.raises(DiskFullError, match=r"no space left writing to .*small"):
        _export(tiny_model("llama"), small_tmpfs / "out")
    assert list(small_tmpfs.iterdir()) == []


def test_an_unusable_cache_folder_is_an_error_naming_the_setting(tiny_model, tmp_path, monkeypatch):
    """edgekit's kernels (and ONNX Runtime's headers they compile against) live in the cache: a cache folder that
    cannot be created is the user's setting to fix, said so before any download or compile, nothing at the output."""
    from edgekit.errors import ExportError

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.delenv("EDGEKIT_ORT_INCLUDE_DIR", raising=False)
    with pytest.raises(ExportError, match="set EDGEKIT_CACHE_DIR to a writable folder"):
        edgekit.export(tiny_model("llama"), "iot", quant="int4", linear_kernel="edgekit", max_seq_len=MAX_SEQ_LEN,
                       out=tmp_path / "out", show_progress=False)
    assert not (tmp_path / "out").exists()
