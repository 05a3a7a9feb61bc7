"""Refusals with reasons, unwritable outputs, interrupted exports."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import edgekit
from edgekit.errors import OutputPathError, UnsupportedOption


def _export(model, out, **kw):
    return edgekit.export(model, "ios", max_seq_len=32, out=out, show_progress=False, **kw)


def test_min_ios_below_18_is_refused_with_the_reason(tiny_model, tmp_path):
    with pytest.raises(UnsupportedOption, match=r"min_ios 17 is below iOS 18.*Core ML states.*iOS 18 / macOS 15"):
        _export(tiny_model("llama"), tmp_path / "a", min_ios=17)
    assert not (tmp_path / "a").exists() and not list(tmp_path.iterdir())


def test_unsupported_quant_scheme_lists_the_supported(tiny_model, tmp_path):
    with pytest.raises(UnsupportedOption, match=r"'8da4w'.*supported: fp16, w8, w4"):
        _export(tiny_model("llama"), tmp_path / "a", quant="8da4w")


def test_int8_kv_cache_is_refused_because_states_are_fp16(tiny_model, tmp_path):
    with pytest.raises(UnsupportedOption, match=r"kv cache 'int8'.*Core ML states are fp16"):
        _export(tiny_model("qwen2"), tmp_path / "a", kv_cache="int8")


def test_unknown_granularity_and_block_size(tiny_model, tmp_path):
    with pytest.raises(UnsupportedOption, match=r"granularity 'per_tensor'.*per_block, per_channel"):
        _export(tiny_model("qwen2"), tmp_path / "a", quant="w4", granularity="per_tensor")
    with pytest.raises(UnsupportedOption, match=r"block_size 48.*16, 32, 64, 128"):
        _export(tiny_model("qwen2"), tmp_path / "b", quant="w4", block_size=48)


@contextlib.contextmanager
def read_only_folder(tmp_path: Path):
    """A folder this process cannot write: chmod for a normal user; a read-only tmpfs for root (root ignores modes)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True, check=False)
    assert res.returncode == 0, f"cannot make a read-only folder as root: {res.stderr.decode()}"
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_unwritable_output_folder(tiny_model, tmp_path):
    with read_only_folder(tmp_path) as ro, pytest.raises(OutputPathError, match="not writable"):
        _export(tiny_model("llama"), ro / "artifact")


def test_session_refuses_positions_the_cache_cannot_take(coreml_export):
    from edgekit_coreml import CoreMLTarget

    s = CoreMLTarget().session(coreml_export("qwen2", "fp16"), runtime="evaluator")
    with pytest.raises(UnsupportedOption, match="consecutive"):
        s.forward(np.array([[1, 2]]), np.array([0, 2]))
    with pytest.raises(UnsupportedOption, match="1..31"):
        s.forward(np.zeros((1, 32), np.int64), np.arange(32))
    with pytest.raises(UnsupportedOption, match="runtime 'gpu'"):
        CoreMLTarget().session(coreml_export("qwen2", "fp16"), runtime="gpu")


CHILD = textwrap.dedent("""
    import sys, edgekit
    edgekit.export(sys.argv[1], "ios", max_seq_len=32, out=sys.argv[2], show_progress=False)
""")


def test_interrupted_export_leaves_nothing(checkpoint_dir, tmp_path):
    """Two exports killed mid-conversion: Ctrl-C (SIGINT) cleans everything up; SIGKILL (no cleanup possible)
    still leaves nothing at the output path, only the hidden .partial folder the next export replaces."""
    ckpt = checkpoint_dir("qwen3")
    runs = {}
    for sig in (signal.SIGINT, signal.SIGKILL):
        out = tmp_path / sig.name / "artifact"
        out.parent.mkdir()
        runs[sig] = (out, subprocess.Popen([sys.executable, "-c", CHILD, str(ckpt), str(out)],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for sig, (out, proc) in runs.items():
        deadline = time.monotonic() + 240
        while not list(out.parent.glob(".artifact.partial-*")) and time.monotonic() < deadline:
            assert proc.poll() is None, f"export ended before it could be interrupted: {proc.stderr.read()[-800:]}"
            time.sleep(0.2)
        time.sleep(1.0)                           # in the coremltools import (Ctrl-C held), build or lower
        assert proc.poll() is None, "export finished before the interrupt; nothing was tested"
        proc.send_signal(sig)
    for sig, (out, proc) in runs.items():
        proc.wait(timeout=120)
        assert proc.returncode != 0
        assert not out.exists()
        left = list(out.parent.iterdir())
        if sig == signal.SIGINT:
            assert left == [], f"interrupted export left {left}"
        else:
            assert all(p.name.startswith(".artifact.partial-") for p in left)


def test_ctrl_c_during_the_coremltools_import_is_held_then_raised():
    """coremltools' import swallows KeyboardInterrupt in bare `except:` blocks; sigint_held lets the block finish and
    raises the interrupt after it, and restores the previous handler."""
    from edgekit_coreml.convert import sigint_held

    before = signal.getsignal(signal.SIGINT)
    finished, swallowed = [], []
    with pytest.raises(KeyboardInterrupt), sigint_held():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # the signal is handled inside the try
        except BaseException as e:  # noqa: BLE001 - what a bare except in coremltools swallows
            swallowed.append(e)
        finished.append(True)
    assert swallowed == [] and finished == [True]
    assert signal.getsignal(signal.SIGINT) is before
