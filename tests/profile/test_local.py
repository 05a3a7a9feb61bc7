"""--device local on real SmolLM2-135M bundles: Android (ExecuTorch .pte) and IoT (ONNX), in this process."""
from __future__ import annotations

import hashlib

import pytest
from conftest import SMALL

from edgekit.profiling import ProfileReport


@pytest.mark.parametrize("name", ["iot", "android"])
def test_local_profile_of_real_bundle(local_reports, smollm2_bundles, name):
    report: ProfileReport = local_reports[name]
    assert report.complete, report.data["error"]
    assert report.bundle["target"] == {"iot": "onnx", "android": "executorch"}[name]
    assert report.bundle["manifest_sha256"] == hashlib.sha256(
        (smollm2_bundles[name] / "manifest.json").read_bytes()).hexdigest()
    res = report.results
    assert res["load_ms"] > 0 and res["peak_rss_bytes"] >= res["rss_after_load_bytes"] > 0
    rows = res["prompt_lengths"]
    assert [r["prompt_length"] for r in rows] == list(SMALL["prompt_lengths"])
    for r in rows:
        assert r["runs"] == SMALL["runs"]                              # warm-ups are not among them
        assert len(r["decode_latencies_ms"]) == SMALL["runs"] * SMALL["decode_tokens"]
        s = r["decode_tokens_per_s"]
        assert 0 < s["p10"] <= s["median"] <= s["p90"]
        assert r["ttft_ms"]["median"] >= r["prefill_ms"]["median"] > 0
        # prefill rate is tokens / prefill time per run: the fastest run gives the highest rate and the slowest
        # the lowest (exact; a median of two noisy runs need not match the rate of the median time)
        rate, ms = r["prefill_tokens_per_s"], r["prefill_ms"]
        assert rate["n"] == ms["n"] == SMALL["runs"]
        assert rate["max"] == pytest.approx(r["prompt_length"] * 1000 / ms["min"], rel=1e-9)
        assert rate["min"] == pytest.approx(r["prompt_length"] * 1000 / ms["max"], rel=1e-9)
    assert res["warmup_runs_excluded"] == SMALL["warmup"] * len(SMALL["prompt_lengths"])
    ops = res["op_profile"]
    assert ops["available"], ops.get("reason")
    assert 0 < len(ops["ops"]) <= 20 and ops["ops"][0]["total_ms"] >= ops["ops"][-1]["total_ms"]
    assert all(o["calls"] >= 1 and o["op_type"] for o in ops["ops"])
    assert report.device["facts"]["runtimes"]["onnxruntime" if name == "iot" else "executorch"]
    assert report.settings["prompt_lengths"] == list(SMALL["prompt_lengths"])
