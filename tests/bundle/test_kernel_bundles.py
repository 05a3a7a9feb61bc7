"""An IoT bundle whose export runs in edgekit's ONNX Runtime kernels (linear_kernel 'edgekit'): the library travels
inside the bundle (hashed like every file, also through a .zip), and both `Bundle.session()` and the IoT sample app,
with no edgekit installed, load it and give the same greedy tokens as the export itself."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.bundling import Bundle
from edgekit.runtime import generate_text

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "iot" / "chat.py"
LIB = "kernels/libedgekit_ort.so"
PROMPT, NEW_TOKENS = "The quick brown fox", 12


@pytest.fixture(scope="module")
def kernel_bundle(tiny_llama, tmp_path_factory):
    import edgekit

    return edgekit.bundle(tiny_llama, target="iot", out=tmp_path_factory.mktemp("dist"), max_seq_len=64, zip=True,
                          show_progress=False, linear_kernel="edgekit")


def test_the_kernel_library_is_a_hashed_bundle_file(kernel_bundle):
    b = Bundle.open(kernel_bundle.source)   # unpacks the .zip, verifies every hash
    m = b.manifest
    assert LIB in m["files"] and m["files"][LIB]["bytes"] == (b.path / LIB).stat().st_size > 0
    assert m["artifact"]["metadata"]["custom_op_libraries"] == [LIB]
    assert json.loads((b.path / "genai_config.json").read_text())["model"]["decoder"]["session_options"][
        "custom_ops_library"] == LIB


def test_session_and_sample_give_the_exports_tokens(kernel_bundle, tiny_llama):
    b = Bundle.open(kernel_bundle.source)
    want = generate_text(b.session(), tiny_llama.tokenizer, PROMPT, max_new_tokens=NEW_TOKENS, temperature=0,
                         stop_ids=b.stop_ids)
    assert len(want.token_ids) > 0
    guard = ("import sys, runpy; [sys.modules.__setitem__(m, None) for m in ('edgekit', 'torch', 'jinja2')]; "
             "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", guard, str(SAMPLE), str(b.path), "--prompt", PROMPT, "--raw",
                        "--temperature", "0", "--max-new-tokens", str(NEW_TOKENS), "--ids-json"],
                       check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])["ids"]
    assert got == [t for t in want.token_ids if t not in b.stop_ids]
