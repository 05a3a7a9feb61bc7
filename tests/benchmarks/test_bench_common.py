"""benchmarks/common.py and benchmarks/report.py: the measuring helpers and the RESULTS.md renderer (no exports)."""
from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import common
import report

QWEN05B = {"vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
           "num_attention_heads": 14, "num_key_value_heads": 2, "tie_word_embeddings": True, "model_type": "qwen2"}


def test_layouts_reproduce_the_peer_artifact_sizes():
    # sizes measured here on 2026-11-26 (shared/peers/README.md and this run): the layouts must explain them within 2 %
    shape = common.ModelShape.from_config(QWEN05B)
    measured = {"8da4w-g32+emb8": 415e6, "int4-g32": 317.7e6, "q4_0": 350e6}
    for name, size in measured.items():
        est = common.theoretical_size_bytes(shape, common.LAYOUTS[name])
        assert abs(est - size) / size < 0.02, (name, est, size)


def test_bytes_per_token_and_roofline():
    shape = common.ModelShape.from_config(QWEN05B)
    bpt = common.decode_bytes_per_token(shape, common.LAYOUTS["min-w4-g32"], context=0)
    # linears + lm_head at 4.5 bits, one embedding row, norms: about 0.278 GB (the README's "~0.28 GB/token")
    assert 0.27e9 < bpt < 0.29e9
    kv = common.decode_bytes_per_token(shape, common.LAYOUTS["min-w4-g32"], context=100) - bpt
    assert kv == 2 * 24 * 100 * 2 * 64 * 2
    assert common.roofline_fraction(50.0, 0.28e9, 28.0) == pytest.approx(0.5)


def test_run_child_measures_peak_rss_and_wall():
    """The child's own peak, even from a parent that holds far more (a fork's ru_maxrss counts the parent's pages)."""
    ballast = bytearray(1536 * 2**20)
    ballast[::4096] = b"x" * len(ballast[::4096])   # resident in this process
    res = common.run_child([sys.executable, "-c", "b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096])"])
    assert res.ok
    assert 300 * 2**20 < res.peak_rss_bytes < 700 * 2**20, res.peak_rss_bytes
    assert res.wall_s > 0
    del ballast


def test_run_child_passes_exit_codes_and_signals_through():
    assert common.run_child([sys.executable, "-c", "raise SystemExit(3)"]).returncode == 3
    assert common.run_child([sys.executable, "-c", "import os; os.kill(os.getpid(), 15)"]).returncode == -15
    missing = common.run_child(["/nonexistent/tool"])
    assert missing.returncode == 127 and "cannot run /nonexistent/tool" in missing.stderr


def test_run_child_timeout_kills_and_reports():
    res = common.run_child([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert res.returncode == -9 and res.wall_s < 10


def test_run_json_child_takes_the_last_json_line(tmp_path):
    data, res = common.run_json_child([sys.executable, "-c", "print('noise'); print('{\"a\": 1}')"],
                                      log=tmp_path / "x.log")
    assert data == {"a": 1} and res.ok and "noise" in (tmp_path / "x.log").read_text()


def test_tree_sha256_follows_content(tmp_path):
    (tmp_path / "a").write_text("1")
    h1 = common.tree_sha256(tmp_path)
    (tmp_path / "a").write_text("2")
    assert common.tree_sha256(tmp_path) != h1
    assert common.path_bytes(tmp_path) == 1


def test_machine_facts_markdown():
    facts = common.machine_facts()
    facts["read_bandwidth_gbs"] = 20.0
    text = common.facts_markdown(facts)
    assert "CPU:" in text and "20.0 GB/s" in text and facts["logical_cores"] >= 1


def _entry(name, kind, model, target=None, **kw):
    e = report.Entry(name=name, kind=kind, label=name, model=model, target=target, **kw)
    return e


def test_render_tables_ratios_and_unavailable_peers(tmp_path):
    shape = common.ModelShape.from_config(QWEN05B)
    ek = _entry("edgekit-onnx", "edgekit", "qwen05b", "onnx", quant="int4", artifact=str(tmp_path), size_bytes=300e6,
                layout=common.LAYOUTS["int4-g32"], export_wall_s=60.0, export_rss=3e9)
    ek.runs = [{"prefill_tok_s": 200.0, "decode_tok_s": 40.0, "load_s": 1.0, "peak_rss_bytes": 1e9},
               {"prefill_tok_s": 180.0, "decode_tok_s": 44.0, "load_s": 1.2, "peak_rss_bytes": 1e9}]
    peer = _entry("onnxruntime-genai", "peer", "qwen05b", quant="int4", artifact=str(tmp_path), size_bytes=317e6,
                  layout=common.LAYOUTS["int4-g32"], reused=True, exported_at="2026-11-26T07:00", export_wall_s=110.0)
    peer.runs = [{"prefill_tok_s": 100.0, "decode_tok_s": 22.0, "load_s": 2.0, "peak_rss_bytes": 1e9}]
    bad = _entry("llama-cpp", "peer", "qwen05b", error="installing llama-cpp failed:\nno compiler")
    ex = _entry("edgekit-executorch", "edgekit", "qwen05b", "executorch", error="edgekit export failed: boom")
    args = argparse.Namespace(prompt=64, gen=64, threads=2, rounds=3)
    facts = common.machine_facts()
    facts.update(read_bandwidth_gbs=25.0, read_bandwidth_after_gbs=24.0)
    doc = report.render([ek, peer, bad, ex], facts=facts, shape=shape, ckpt=tmp_path, sha="ab" * 32, args=args,
                        started=dt.datetime(2026, 11, 26, tzinfo=dt.timezone.utc), wall_s=600.0, argv=[])
    assert "2026-11-26" in doc and "25.0 GB/s" in doc
    assert "| onnxruntime-genai | 100.0 | 22.00 | 2.00 | 2.00 |" in doc        # edgekit ÷ peer ratios
    assert "no compiler" in doc and "boom" in doc                             # reported, not dropped
    assert "reused from the cache (exported 2026-11-26T07:00" in doc
    assert "200.0 (180-200)" in doc                                          # best of rounds + spread


def test_builder_folder_as_written_drops_only_the_thread_count(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks" / "peers"))
    import json

    import tools

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"graph")
    cfg = {"model": {"decoder": {"filename": "model.onnx",
                                 "session_options": {"log_id": "x", "intra_op_num_threads": 2}}}}
    (folder / "genai_config.json").write_text(json.dumps(cfg))
    for _ in range(2):  # a second call replaces the first copy
        out = tools.genai_folder_as_written(folder)
    assert out == tmp_path / "model-as-written" and not (tmp_path / "model-as-written.tmp").exists()
    assert (out / "model.onnx").stat().st_ino == (folder / "model.onnx").stat().st_ino  # a hard link, no copy
    got = json.loads((out / "genai_config.json").read_text())["model"]["decoder"]
    assert got == {"filename": "model.onnx", "session_options": {"log_id": "x"}}
    assert json.loads((folder / "genai_config.json").read_text()) == cfg  # the pinned folder is untouched


def test_validate_child_loads_the_checkpoint_as_the_export_did(tmp_path, monkeypatch):
    """run.py validates in its own process: it must load the weights in the export's dtype (a GGUF file's weights
    rounded to bf16 quantize to other int4 codes than their fp32 values: SmolLM2 'failed' parity that way)."""
    sys.path.insert(0, str(Path(common.__file__).parent / "peers"))
    import edgekit_child
    import torch

    import edgekit
    import edgekit.validate
    from edgekit.targets import base

    seen = {}
    monkeypatch.setattr(edgekit, "load", lambda ckpt, dtype=torch.float32: seen.setdefault("dtype", dtype))
    monkeypatch.setattr(base.Artifact, "load", staticmethod(lambda out: argparse.Namespace(metadata={"quant": "int4"})))
    figures = {"max_abs_logit_diff": 1.6, "tolerance": 3.1, "target_tolerance": 1.0, "reference_noise_floor": 1.55,
               "prompt_tokens": 7, "decode_steps": 8, "top1_agreement_vs_reference": 1.0,
               "top1_agreement_vs_fp32": 0.667}
    monkeypatch.setattr(edgekit.validate, "compare", lambda tgt, art, model, spec: figures)
    for name, dtype in (("stored", None), ("bfloat16", torch.bfloat16), ("float32", torch.float32)):
        seen.clear()
        info = edgekit_child.validate("onnx", str(tmp_path), str(tmp_path), 64, name)
        assert seen["dtype"] is dtype and info["validate_load_dtype"] == name
    assert info["validation"] == ("validated: max |Δlogit| 1.6 <= tolerance 3.1 (max(target 1, 2 x the reference's "
                                  "noise floor 1.55)) over 7 prefill + 8 decode steps; top-1 vs reference 1.00, "
                                  "top-1 vs fp32 0.67")
