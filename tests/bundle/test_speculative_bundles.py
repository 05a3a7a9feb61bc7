"""A bundle made with every position's logits carries edgekit's speculative decoding loop (edgekit_speculate.py,
hashed and named by the manifest), and the IoT sample app, with no edgekit installed, decodes through it: the same
greedy tokens as one token per step, in fewer forwards on a prompt that repeats."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.bundling import Bundle

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "iot" / "chat.py"
GUARD = ("import sys, runpy; [sys.modules.__setitem__(m, None) for m in ('edgekit', 'torch', 'jinja2')]; "
         "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


@pytest.fixture(scope="module")
def bundles(tiny_llama, tmp_path_factory):
    import edgekit

    out = tmp_path_factory.mktemp("dist")
    made = {}
    for last in (False, True):
        made[last] = edgekit.bundle(tiny_llama, target="iot", quant="fp32", out=out, max_seq_len=96,
                                    last_logits_only=last, name=f"tiny-{'last' if last else 'all'}",
                                    show_progress=False)
    return made


def _sample(bundle: Path, *extra: str) -> dict:
    # a text said twice: its second half is all n-gram matches
    prompt = "the cat sat on the mat and the dog ran to the park. the cat sat on the mat and the dog"
    r = subprocess.run([sys.executable, "-c", GUARD, str(SAMPLE), str(bundle), "--prompt", prompt, "--raw",
                        "--temperature", "0", "--max-new-tokens", "40", "--ids-json", *extra],
                       check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_an_all_logits_bundle_carries_the_loop_as_a_hashed_file(bundles):
    b = Bundle.open(bundles[False].source)   # verifies every hash and every named path
    runner = b.manifest["runner"]
    assert runner["speculate_file"] == "edgekit_speculate.py" and "edgekit_speculate.py" in b.manifest["files"]
    assert "def decode(" in (b.path / "edgekit_speculate.py").read_text()
    last = Bundle.open(bundles[True].source)
    assert "speculate_file" not in last.manifest["runner"] and "edgekit_speculate.py" not in last.manifest["files"]


def test_the_sample_decodes_speculatively_and_gives_plain_greedys_tokens(bundles):
    fast, plain = _sample(bundles[False].source), _sample(bundles[False].source, "--speculate", "off")
    assert fast["ids"] == plain["ids"] and len(fast["ids"]) > 10
    spec = fast["speculation"]
    assert spec["mode"] == "ngram" and spec["verify_forwards"] > 0 and spec["accepted"] > 0
    assert spec["forwards"] < len(fast["ids"]) - 1 and "speculation" not in plain
    # a last-logits bundle decodes one token per step, to the same tokens
    assert _sample(bundles[True].source)["ids"] == plain["ids"]
