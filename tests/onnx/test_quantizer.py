"""quant int4 with quantizer 'gptq' / 'search': edgekit's QuantizedTensors go into MatMulNBits (or LinearQ4) exactly,
the export validates against a reference carrying the same dequantized weights, the manifest metadata names the
quantizer and the calibration text's sha256; bad values are errors naming the value and what is accepted."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from edgekit_onnx.quant import dequantize, linear_in_features, pack_blockwise, plan_for
from edgekit_onnx.quantizer import quantizer_tensors
from onnx import numpy_helper

import edgekit
from edgekit.errors import CalibrationError, UnsupportedOption
from edgekit.quant.calibrate import calibration_for
from edgekit.targets.registry import get_target

SEQ = 32


@pytest.fixture(scope="module")
def gptq_export(tiny_model, tmp_path_factory):
    """llama (hidden 64, intermediate 160) at block 64: down_proj's 160 inputs pad to 3 blocks, the others fit."""
    model = tiny_model("llama")
    art = edgekit.export(model, "onnx", quant="int4", block_size=64, accuracy_level=1, quantizer="gptq",
                         max_seq_len=SEQ, out=tmp_path_factory.mktemp("gptq") / "a", show_progress=False)
    return model, art


def _initializers(art) -> dict[str, np.ndarray]:
    proto = onnx.load(str(art.path / "model.onnx"))
    return {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}


def test_gptq_export_carries_the_quantized_tensors(gptq_export):
    model, art = gptq_export
    plan = plan_for("int4", {"block_size": 64, "accuracy_level": 1, "quantizer": "gptq"},
                    linear_in_features(model.config))
    tensors, _ = quantizer_tensors(model, plan)
    init = _initializers(art)
    cfg = model.config
    for graph_name, parts, k in (("/model/layers.1/mlp/down_proj", ["layers.1.feed_forward.w2.weight"],
                                  cfg.intermediate_size),
                                 ("/model/layers.0/attn/qkv_proj", [f"layers.0.attention.w{p}.weight" for p in "qkv"],
                                  cfg.hidden_size)):
        packed, scales = init[f"{graph_name}.weight_Q4"], init[f"{graph_name}.weight_scales"]
        got = dequantize(packed, scales, 4, k)
        want = torch.cat([tensors[p].dequantize()[:, :k] for p in parts]).numpy()
        assert np.array_equal(got, want), graph_name
        # not ORT's round-to-nearest of the same weight (the quantizer chose other codes)
        ort_packed, ort_scales = pack_blockwise(torch.cat([model.weights[p] for p in parts]).numpy(), 4, 64)
        assert not np.array_equal(dequantize(ort_packed, ort_scales, 4, k), want), graph_name


def test_gptq_export_metadata_and_parity(gptq_export):
    model, art = gptq_export
    cal = calibration_for(None)
    q = art.metadata["quantizer"]
    assert q["quantizer"] == "gptq" and q["calibration"]["sha256"] == cal.sha256
    assert art.metadata["quantization"]["quantizer"] == "gptq"
    ids = torch.randint(1, model.config.vocab_size, (1, SEQ), generator=torch.Generator().manual_seed(0))
    got = get_target("onnx").session(art).forward(ids.numpy(), np.arange(SEQ, dtype=np.int64))
    spec_ref = get_target("onnx").reference(model, _spec(art))
    with torch.no_grad():
        ref = spec_ref(ids, torch.arange(SEQ)).numpy()
    assert float(np.abs(got - ref).max()) < 1e-3      # the fp32-activation tolerance: same weights exactly


def _spec(art):
    from edgekit.targets.base import TargetSpec

    return TargetSpec(quant="int4", max_seq_len=SEQ, kv_cache="fp32", last_logits_only=False,
                      options={"block_size": 64, "accuracy_level": 1, "quantizer": "gptq"})


@pytest.mark.parametrize("options", [{"quantizer": "search"},
                                     {"quantizer": "gptq", "linear_kernel": "edgekit", "block_size": 32}])
def test_other_quantizer_paths_validate(tiny_model, tmp_path, options):
    art = edgekit.export(tiny_model("qwen2"), "onnx", quant="int4", max_seq_len=SEQ, out=tmp_path / "a",
                         show_progress=False, **options)
    assert art.metadata["quantizer"]["quantizer"] == options["quantizer"]


def test_user_calibration_file_is_recorded(tiny_model, tmp_path):
    text = tmp_path / "cal.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    art = edgekit.export(tiny_model("qwen3"), "onnx", quant="int4", block_size=32, accuracy_level=1,
                         quantizer="gptq", calibration=str(text), max_seq_len=SEQ, out=tmp_path / "a",
                         show_progress=False)
    assert art.metadata["quantizer"]["calibration"]["sha256"] == calibration_for(text).sha256
    assert art.metadata["quantizer"]["calibration"]["id"] == str(text)


def test_bad_values_name_what_is_accepted(tiny_model, tmp_path):
    with pytest.raises(UnsupportedOption, match=r"quantizer='awq'.*accepted: rtn, search, gptq"):
        plan_for("int4", {"quantizer": "awq"})
    with pytest.raises(UnsupportedOption, match=r"quantizer='gptq'.*needs quant 'int4'"):
        plan_for("fp32", {"quantizer": "gptq"})
    with pytest.raises(UnsupportedOption, match="read by quantizer 'gptq' only"):
        plan_for("int4", {"calibration": "x.txt"})
    with pytest.raises(UnsupportedOption, match="quantizer"):
        plan_for("source", {"quantizer": "gptq"})
    with pytest.raises(CalibrationError, match=r"missing\.txt.*accepted"):
        edgekit.export(tiny_model("llama"), "onnx", quant="int4", quantizer="gptq",
                       calibration=str(tmp_path / "missing.txt"), max_seq_len=SEQ, out=tmp_path / "a",
                       show_progress=False)
    assert not (tmp_path / "a").exists()


# tied (the table gathers from the head's codes; at block 128 its 64-wide rows are padded, as SmolLM2's 576), untied
@pytest.mark.parametrize(("case", "block"), [("qwen3", 32), ("qwen3", 128), ("llama", 32)])
def test_quantizer_output_layer(tiny_model, tmp_path, case, block):
    model = tiny_model(case)
    art = edgekit.export(model, "onnx", quant="int4", block_size=block, accuracy_level=1, quantizer="gptq",
                         quantizer_output=True, max_seq_len=SEQ, out=tmp_path / "a", show_progress=False)
    plan = plan_for("int4", {"block_size": block, "accuracy_level": 1, "quantizer": "gptq", "quantizer_output": True},
                    linear_in_features(model.config))
    head = "tok_embeddings.weight" if model.config.tie_word_embeddings else "output.weight"
    tensors, _ = quantizer_tensors(model, plan)
    init = _initializers(art)
    # tied: one copy of the scales, GatherBlockQuantized's [V, K/block, 1], which MatMulNBits reads through a Reshape
    tied = model.config.tie_word_embeddings
    assert ("/lm_head.weight_scales" in init) != tied
    scales = init["model.embed_tokens.weight_scales" if tied else "/lm_head.weight_scales"]
    got = dequantize(init["/lm_head.weight_Q4"], scales.reshape(scales.shape[0], -1), 4, model.config.hidden_size)
    assert np.array_equal(got, tensors[head].dequantize()[:, :model.config.hidden_size].numpy())
    with pytest.raises(UnsupportedOption, match="quantizer_output needs"):
        plan_for("int4", {"quantizer_output": True})
