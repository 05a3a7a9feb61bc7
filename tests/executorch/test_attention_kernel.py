"""attention_kernel 'edgekit': the fp32 KV cache attended by edgekit::attention (edgekit's kernel library) instead of
ExecuTorch's llama::custom_sdpa. An fp32 export must still match the fp32 eager graph to 1e-4 (the kernel is
fp32 throughout), decode greedily like it, and say which attention and which kernel library it needs."""
from __future__ import annotations

import pytest
from edgekit_executorch.attention import resolve_attention
from test_parity import _check_greedy

import edgekit
from edgekit.errors import UnsupportedOption

MAX_SEQ_LEN = 64  # as conftest.py


@pytest.mark.slow
@pytest.mark.parametrize("case", ["llama", "qwen3"])  # qwen3: q/k norms before the cache
def test_fp32_export_with_edgekit_attention_matches_eager(tiny_model, tmp_path, case):
    art = edgekit.export(tiny_model(case), "android", quant="fp32", max_seq_len=MAX_SEQ_LEN, out=tmp_path / "a",
                         show_progress=False, attention_kernel="edgekit")
    meta = art.metadata
    assert meta["attention"] == "edgekit::attention (fp32 cache) + llama::update_cache"
    assert meta["validation"]["max_abs_logit_diff"] <= 1e-4
    assert _check_greedy(tiny_model(case), art) <= 1e-4            # stated: fp32 .pte vs fp32 eager
    layers = tiny_model(case).config.num_layers
    assert meta["delegation"]["portable_ops"]["edgekit"] == layers   # one attention call per layer
    assert meta["delegation"]["delegated_subgraphs"] > 0             # the fp32 linears stay with XNNPACK
    assert meta["custom_op_libraries"], "edgekit::attention needs edgekit's kernel library; the artifact must say so"


@pytest.mark.parametrize("options, kv_cache, linear_kernel, expected", [
    ({}, "fp32", "xnnpack", "llama"),
    ({}, "fp32", "edgekit", "edgekit"),                       # the kernel library is there already: use it
    ({"attention_kernel": "llama"}, "fp32", "edgekit", "llama"),
    ({"attention_kernel": "edgekit"}, "fp32", "xnnpack", "edgekit"),
    ({}, "int8", "xnnpack", "int8"),
    ({"attention_kernel": "edgekit"}, "int8", "edgekit", "int8"),
    ({"custom_sdpa": False}, "fp32", "edgekit", "graph"),
    ({"custom_sdpa": "false"}, "fp32", "xnnpack", "graph"),
])
def test_attention_choice(options, kv_cache, linear_kernel, expected):
    assert resolve_attention(options, kv_cache, linear_kernel) == expected


@pytest.mark.parametrize("options, match", [
    ({"attention_kernel": "flash"}, r"attention_kernel 'flash' is not supported; supported: llama, edgekit"),
    ({"attention_kernel": "llama", "kv_cache": "int8"}, r"'llama' \(custom_sdpa\) reads fp32 caches only"),
    ({"attention_kernel": "edgekit", "custom_sdpa": False}, r"custom_sdpa false .* contradicts attention_kernel"),
])
def test_bad_attention_options_fail_before_export(tiny_model, tmp_path, options, match):
    with pytest.raises(UnsupportedOption, match=match):
        edgekit.export(tiny_model("llama"), "android", quant="fp32", out=tmp_path / "a", **options)
    assert not any(tmp_path.iterdir())
