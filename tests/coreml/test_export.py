"""Exports of every family at fp16 / w8 / w4: structure of the ML program and parity through the Linux evaluator."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit.runtime.session import EagerSession
from edgekit.validate import probe_tokens, run_steps

FAMILIES = ("llama", "qwen2", "qwen3")
QUANTS = ("fp16", "w8", "w4")


@pytest.mark.parametrize("quant", QUANTS)
@pytest.mark.parametrize("case", FAMILIES)
def test_export_validates(coreml_export, case, quant):
    """edgekit.export ran prefill + 8 decode steps through the evaluator against the reference, within tolerance."""
    art = coreml_export(case, quant)
    v = art.metadata["validation"]
    assert v["max_abs_logit_diff"] <= 3e-2 and v["max_abs_logit_diff"] <= v["tolerance"]  # stated: 3e-2 on tiny
    assert v["top1_agreement_vs_reference"] == 1.0
    # the package plus the tokenizer it was exported with, so it bundles without its checkpoint
    assert art.files == ["model.mlpackage", "tokenizer.json", "chat_template.jinja", "tokenizer_config.json"]
    assert (art.path / "model.mlpackage" / "Manifest.json").exists()
    assert all((art.path / name).is_file() for name in art.files[1:])
    assert art.metadata["quant"] == quant and art.metadata["quant_detail"]["scheme"] == quant
    if quant == "fp16":
        assert v["max_abs_logit_diff"] <= 2e-2  # the fp16 ML program vs the fp32 eager graph


@pytest.mark.parametrize("case", FAMILIES)
def test_fp16_longer_decode_matches_eager(coreml_export, tiny_model, case):
    """Beyond export's own check: a 5-token prefill then 20 teacher-forced decode steps, max |Δlogit| <= 2e-2."""
    from edgekit_coreml import CoreMLTarget

    art, model = coreml_export(case, "fp16"), tiny_model(case)
    tokens = probe_tokens(model.config.vocab_size, 25, seed=7)
    got = run_steps(CoreMLTarget().session(art, runtime="evaluator"), tokens[:5], tokens[5:])
    with torch.no_grad():
        ref = run_steps(EagerSession(model.decoder(art.metadata["max_seq_len"])), tokens[:5], tokens[5:])
    assert np.abs(got - ref).max() <= 2e-2


def test_program_structure(coreml_export, mil_function):
    """States with slice updates, the fused iOS 18 attention op (no decomposed softmax), named I/O, fp16 states."""
    art = coreml_export("qwen2", "fp16")
    fn = mil_function(art)
    ops = [o.op_type for o in fn.operations]
    layers = 2
    assert ops.count("scaled_dot_product_attention") == layers
    assert "softmax" not in ops and "matmul" not in ops     # attention not decomposed
    assert ops.count("slice_update") == 2 * layers and ops.count("coreml_update_state") == 2 * layers
    states = {n: v for n, v in fn.inputs.items() if v.sym_type.__name__.startswith("state")}
    assert len(states) == 2 * layers
    assert all(str(v.sym_type.wrapped_type().get_primitive().__name__) == "fp16" for v in states.values())
    assert set(fn.inputs) - set(states) == {"tokens", "input_pos"}
    assert [v.name for v in fn.outputs] == ["logits"]


def test_model_description_and_metadata(coreml_export, tiny_model):
    import coremltools as ct

    art, model = coreml_export("llama", "w4"), tiny_model("llama")
    spec = ct.models.MLModel(str(art.main_file), skip_model_load=True).get_spec()
    assert spec.specificationVersion >= 9                     # iOS 18 / macOS 15
    assert [i.name for i in spec.description.input] == ["tokens", "input_pos"]
    assert [o.name for o in spec.description.output] == ["logits"]
    rng = spec.description.input[0].type.multiArrayType.shapeRange.sizeRanges[1]
    assert (rng.lowerBound, rng.upperBound) == (1, art.metadata["max_seq_len"] - 1)  # flexible T
    meta = dict(spec.description.metadata.userDefined)
    assert meta["edgekit.vocab_size"] == str(model.config.vocab_size)
    assert meta["edgekit.max_seq_len"] == str(art.metadata["max_seq_len"])
    assert meta["edgekit.eos_ids"] == ",".join(map(str, model.stop_ids))
    assert meta["edgekit.quant"] == "w4" and meta["edgekit.version"]
    assert "bos_id" in art.metadata and art.metadata["kv_cache_storage"].startswith("fp16")
    assert "flexible" in art.metadata["shape_strategy"]


def test_weight_quantization_layout(coreml_export, mil_function, tiny_model):
    """w8: one int8 scale per output channel; w4: int4 with one scale per 32 inputs; norms and rope stay fp16."""
    from coremltools.converters.mil.mil import types

    n_weights = len([n for n in tiny_model("qwen2").weights if n.endswith("weight") and "norm" not in n])
    for quant, bits, cols in (("w8", 8, lambda w: 1), ("w4", 4, lambda w: w.shape[1] // 32)):
        fn = mil_function(coreml_export("qwen2", quant))
        deq = [o for o in fn.operations if o.op_type == "constexpr_blockwise_shift_scale"]
        assert len(deq) == n_weights
        for o in deq:
            data, scale = o.inputs["data"], o.inputs["scale"]
            assert types.builtin_to_string(data.dtype) == f"int{bits}"
            assert scale.shape == (data.shape[0], cols(data))
        assert not any("rope" in o.name or "mask" in o.name for o in deq)  # buffers stay fp16


def test_ane_report_block_vs_per_channel(coreml_export):
    block = coreml_export("qwen3", "w4")
    channel = coreml_export("qwen3", "w4", granularity="per_channel")
    rules = lambda art: {f.split(":", 1)[0] for f in art.metadata["ane_findings"]}
    assert "per-block-quantization" in rules(block)
    assert "per-block-quantization" not in rules(channel)
    assert "dynamic-shape" in rules(block) and "dynamic-shape" in rules(channel)
    assert channel.metadata["quant_detail"]["granularity"] == "per_channel"
    assert channel.metadata["validation"]["max_abs_logit_diff"] <= channel.metadata["validation"]["tolerance"]


def test_generate_cli(coreml_export, checkpoint_dir):
    """`edgekit generate MODEL --target ios --artifact ...` runs the artifact through the evaluator Session."""
    from click.testing import CliRunner

    from edgekit.cli import cli

    art = coreml_export("qwen3", "w8")
    res = CliRunner().invoke(cli, ["generate", str(checkpoint_dir("qwen3")), "--target", "ios", "--artifact",
                                   str(art.path), "-p", "hello", "--max-new-tokens", "4", "--temperature", "0"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "tokens, stop:" in res.output


@pytest.mark.macos
def test_coreml_predict_matches_evaluator(coreml_export):
    """On macOS: MLModel.predict with an MLState gives the evaluator's logits (fp16 program, same numbers ±2e-2)."""
    import platform

    if platform.system() != "Darwin":
        pytest.skip("Core ML predict needs macOS 15+; on Linux the numpy evaluator is the runtime")
    from edgekit_coreml.session import CoreMLSession, EvaluatorSession

    art = coreml_export("llama", "fp16")
    tokens = probe_tokens(512, 12)
    got = run_steps(CoreMLSession(art), tokens[:4], tokens[4:])
    ref = run_steps(EvaluatorSession(art), tokens[:4], tokens[4:])
    assert np.abs(got - ref).max() <= 2e-2


def test_last_logits_only_returns_the_last_position(coreml_export, tiny_model):
    """last_logits_only: logits [1, 1, V], the last row of the full program's logits (both fp16, within 2e-2)."""
    from edgekit_coreml import CoreMLTarget

    last = coreml_export("qwen3", "fp16", last_logits_only=True)
    full = coreml_export("qwen3", "fp16")
    assert last.metadata["validation"]["max_abs_logit_diff"] <= 2e-2
    tokens = np.array(probe_tokens(tiny_model("qwen3").config.vocab_size, 6, seed=3))
    got = CoreMLTarget().session(last, runtime="evaluator").forward(tokens[None, :], np.arange(6))
    ref = CoreMLTarget().session(full, runtime="evaluator").forward(tokens[None, :], np.arange(6))
    assert got.shape == (1, 1, ref.shape[-1]) and ref.shape[1] == 6
    assert np.abs(got[0, 0] - ref[0, -1]).max() <= 2e-2
