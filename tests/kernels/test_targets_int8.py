"""kv_cache="int8" as a target option: ExecuTorch exports, validates, runs a Session and generates with it; ONNX
accepts it (its numerics: test_onnx_int8_kv.py); Core ML refuses it with the reason; unknown cache kinds are named."""
from __future__ import annotations

import pytest

from edgekit.errors import UnsupportedOption

MAX_SEQ_LEN = 64


def test_executorch_int8_export_validates_and_records_its_kernel_library(et_int8, tiny_model):
    meta = et_int8.metadata
    assert meta["kv_cache"] == "int8"
    v = meta["validation"]   # an int8 cache is checked against a noisy reference and the fp32 model too
    assert v["reference_noise_floor"] is not None and "top1_agreement_vs_fp32" in v
    assert meta["attention"].startswith("edgekit int8 kv cache")
    assert meta["custom_op_libraries"] == ["kernels/libedgekit_kernels.so"]   # the artifact's own copy
    # one edgekit::attention per layer outside XNNPACK (our kernel library runs it), nothing silently dropped
    assert meta["delegation"]["portable_ops"].get("edgekit") == tiny_model("qwen2").config.num_layers


def test_executorch_int8_session_generates_like_the_reference(et_int8, tiny_model):
    from edgekit_executorch.target import ExecuTorchTarget

    from edgekit.runtime.generate import GenerationConfig, generate
    from edgekit.runtime.session import EagerSession
    from edgekit.targets.base import TargetSpec

    target = ExecuTorchTarget()
    spec = TargetSpec(quant="fp32", max_seq_len=MAX_SEQ_LEN, kv_cache="int8")
    prompt = [5, 17, 99, 3, 250, 41, 7, 8, 9, 10]
    config = GenerationConfig(max_new_tokens=20)
    got = generate(target.session(et_int8), prompt, config).token_ids
    ref_session = EagerSession(target.reference(tiny_model("qwen2"), spec))
    import torch

    with torch.no_grad():
        want = generate(ref_session, prompt, config).token_ids
    assert len(got) == 20 and got == want


def test_coreml_refuses_int8_cache_with_the_reason(tiny_model, tmp_path):
    import edgekit

    with pytest.raises(UnsupportedOption, match=r"kv cache 'int8'.*Core ML states are fp16"):
        edgekit.export(tiny_model("llama"), "ios", quant="fp16", max_seq_len=MAX_SEQ_LEN, kv_cache="int8",
                       out=tmp_path / "a", show_progress=False)


@pytest.mark.parametrize("target", ["android", "iot"])
def test_targets_list_int8_and_name_unknown_cache_kinds(target, tiny_model, tmp_path):
    import edgekit
    from edgekit.targets.registry import get_target

    assert "int8" in get_target(target).capabilities.kv_cache
    with pytest.raises(UnsupportedOption, match=r"kv cache 'int4'.*supported: fp32, int8"):
        edgekit.export(tiny_model("llama"), target, quant="fp32", max_seq_len=MAX_SEQ_LEN, kv_cache="int4",
                       out=tmp_path / "a", show_progress=False)


def test_int8_cache_bytes_are_about_a_quarter(tiny_model):
    from edgekit.kernels import use_int8_kv_cache

    dec = use_int8_kv_cache(tiny_model("llama").decoder(MAX_SEQ_LEN, False))
    cfg = tiny_model("llama").config
    fp32 = 2 * cfg.num_layers * MAX_SEQ_LEN * cfg.num_kv_heads * cfg.head_dim * 4
    int8 = sum(layer.attention.attend.cache_bytes() for layer in dec.layers)
    assert int8 / fp32 == pytest.approx((cfg.head_dim + 4) / (4 * cfg.head_dim), rel=1e-9)
