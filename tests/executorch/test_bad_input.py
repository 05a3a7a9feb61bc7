"""Bad input fails early and says what is accepted; an interrupted export leaves nothing at the output path."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import edgekit
from edgekit.errors import OutputPathError, UnsupportedOption


def test_unsupported_scheme_lists_supported(tiny_model, tmp_path):
    with pytest.raises(UnsupportedOption, match=r"'w4'.*supported: fp32, 8da8w, 8da4w"):
        edgekit.export(tiny_model("llama"), "android", quant="w4", out=tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_max_seq_len_beyond_positions(tiny_model, tmp_path):
    limit = tiny_model("llama").config.max_position_embeddings
    with pytest.raises(UnsupportedOption, match=rf"max_seq_len {limit + 1}.*2\.\.{limit}"):
        edgekit.export(tiny_model("llama"), "android", max_seq_len=limit + 1, out=tmp_path / "a")


@pytest.mark.parametrize("options, match", [
    ({"group_size": 48}, r"group_size 48 .*supported: 32, 64, 128"),
    ({"embedding_bits": 2}, r"embedding_bits 2 .*supported: 4, 8"),
    ({"bogus": 1}, r"bogus.*known: group_size"),
    ({"linear_kernel": "cuda"}, r"linear_kernel 'cuda' .*supported: xnnpack, edgekit"),
])
def test_bad_options(tiny_model, tmp_path, options, match):
    with pytest.raises(UnsupportedOption, match=match):
        edgekit.export(tiny_model("llama"), "android", quant="8da4w", out=tmp_path / "a", **options)
    assert not any(tmp_path.iterdir())


def test_edgekit_linear_kernel_needs_8da4w(tiny_model, tmp_path):
    with pytest.raises(UnsupportedOption, match=r"linear_kernel 'edgekit' runs 8da4w linears only.*'8da8w'"):
        edgekit.export(tiny_model("llama"), "android", quant="8da8w", out=tmp_path / "a", linear_kernel="edgekit")
    assert not any(tmp_path.iterdir())


def test_group_size_must_divide_features(tiny_model, tmp_path):
    """The tiny MLP has 160 input features: group 64 does not divide it, and the error says so."""
    with pytest.raises(UnsupportedOption, match=r"160 input features, not a multiple of group_size 64"):
        edgekit.export(tiny_model("llama"), "android", quant="8da4w", out=tmp_path / "a", group_size=64,
                       validate=False)
    assert not any(p.name.startswith(".a.partial") for p in tmp_path.iterdir())


def test_unwritable_output_folder(tiny_model):
    with pytest.raises(OutputPathError, match="not writable"):
        edgekit.export(tiny_model("llama"), "android", quant="fp32", out=Path("/proc/edgekit-test/out"))


CHILD = """
import logging, signal, sys
# a background shell starts its jobs with SIGINT ignored and Python keeps an inherited SIG_IGN: what Ctrl-C does
signal.signal(signal.SIGINT, signal.default_int_handler)
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
import edgekit
edgekit.export(sys.argv[1], "android", quant="8da4w", max_seq_len=64, out=sys.argv[2], show_progress=False)
"""


@pytest.mark.slow
def test_interrupted_export_leaves_nothing(checkpoint_dir, tmp_path):
    """SIGINT while lowering: the child exits, and neither the artifact nor its temp folder is left behind."""
    out = tmp_path / "artifact"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(checkpoint_dir("llama")), str(out)],
                            stderr=subprocess.PIPE, text=True)
    seen = []
    deadline = time.time() + 240
    for line in proc.stderr:  # stage logs: "... capture took N s" means lowering has started
        seen.append(line)
        if "capture took" in line or time.time() > deadline:
            break
    assert any("capture took" in s for s in seen), "".join(seen[-20:])
    time.sleep(1.0)
    assert proc.poll() is None, "export finished before it could be interrupted"
    os.kill(proc.pid, signal.SIGINT)
    try:
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())
