"""The profile's speculation section: the shipped prompts decoded plainly and with speculative decoding on the device,
in this process and through the runner pushed over SSH (which imports the pushed edgekit_speculate.py)."""
from __future__ import annotations

import json

import pytest
from checkpoints import make_tokenizer
from conftest import SMALL
from helpers import TOY_SESSION, make_toy_bundle

from edgekit import profiling
from edgekit.evaldata import speculation_prompts


@pytest.fixture(scope="module")
def toy_tokenizer(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy-tokenizer")
    make_tokenizer(folder, vocab_size=512)
    return folder


def _check_section(report) -> None:
    spec = report.results["speculation"]
    assert spec["available"], spec
    shipped = {kind: [p["id"] for p in items] for kind, items in speculation_prompts().items()}
    assert [p["prompt"] for p in spec["prompts"]] == shipped["grounded"] + shipped["open_ended"]
    for p in spec["prompts"]:
        # the toy's rows are exact whatever the width: speculation must give plain greedy's tokens
        assert p["same_as_plain"] and p["plain_decode_tok_s"] > 0 and p["decode_tok_s"] > 0
        assert p["tokens_per_forward"] >= 1.0 and p["prompt_tokens"] > 10
    # the toy repeats itself within a few tokens (its next token depends on the last one only): drafts are kept
    assert max(p["tokens_per_forward"] for p in spec["prompts"]) > 1.5
    assert set(spec["sets"]) == {"grounded", "open_ended"}
    assert all(s["speedup_geomean"] > 0 and s["same_as_plain"] == s["prompts"] for s in spec["sets"].values())
    md = report.to_markdown()
    assert "### Speculative decoding" in md and "geometric mean" in md
    html = report.to_html()
    assert "<h2>Speculative decoding</h2>" in html and "Decode with and without speculation" in html


def test_local_profile_measures_speculation(tmp_path, toy_tokenizer):
    bundle = make_toy_bundle(tmp_path / "toy", all_logits=True, tokenizer_from=toy_tokenizer, max_seq_len=512)
    report = profiling.profile(bundle, "local", history=False, session_module=TOY_SESSION,
                               **{**SMALL, "decode_tokens": 24})
    assert report.complete
    _check_section(report)
    assert json.loads(json.dumps(report.data))["results"]["speculation"]["available"]
    # the device's read bandwidth is measured after the model (edgekit plan uses it), outside the peak RSS
    assert report.results["read_bandwidth_gbs"] > 0.1


def test_speculation_off_and_last_logits_bundles_say_why(tmp_path, toy_tokenizer):
    last = make_toy_bundle(tmp_path / "last", tokenizer_from=toy_tokenizer)
    spec = profiling.profile(last, "local", history=False, session_module=TOY_SESSION, **SMALL).results["speculation"]
    assert not spec["available"] and "last position's logits" in spec["reason"]
    full = make_toy_bundle(tmp_path / "full", all_logits=True, tokenizer_from=toy_tokenizer)
    spec = profiling.profile(full, "local", history=False, speculate="off", session_module=TOY_SESSION,
                             **SMALL).results["speculation"]
    assert not spec["available"] and "--speculate off" in spec["reason"]
    spec = profiling.profile(make_toy_bundle(tmp_path / "notok", all_logits=True), "local", history=False,
                             session_module=TOY_SESSION, **SMALL).results["speculation"]
    assert not spec["available"] and "tokenizer could not be read" in spec["reason"]


def test_ssh_profile_measures_speculation_with_the_pushed_loop(sshd, tmp_path, toy_tokenizer):
    bundle = make_toy_bundle(tmp_path / "toy", all_logits=True, tokenizer_from=toy_tokenizer, max_seq_len=512)
    report = profiling.profile(bundle, sshd.uri, history=False, **{**SMALL, "decode_tokens": 24}, **sshd.options)
    assert report.complete, report.data["error"]
    assert report.data["runner"]["kind"] == "edgekit-runner"
    _check_section(report)
    assert report.results["read_bandwidth_gbs"] > 0.1   # measured on the board by the pushed runner
    # the probe reads a 256 MB buffer after the model is freed: the lean remote process's peak stays the toy's
    assert report.results["peak_rss_bytes"] < 200 << 20
