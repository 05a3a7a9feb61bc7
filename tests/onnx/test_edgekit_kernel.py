"""linear_kernel 'edgekit' on the ONNX target: every int4 linear and the 4-bit token embedding run in edgekit's own
kernel library (edgekit.LinearQ4 / GatherQ4, SwiGLU fused into the down projection), shipped inside the export
folder. Every family (tiny random checkpoints) and SmolLM2-135M: validated on export, greedy continuation equal to
the eager reference, and the same folder runs unchanged in onnxruntime-genai with the same tokens."""
from __future__ import annotations

import json
import logging

import onnx
import pytest
from greedy import check_greedy
from test_onnx_parity import _genai_greedy

from edgekit.validate import probe_tokens

log = logging.getLogger(__name__)
FAMILIES = ["llama", "qwen2", "qwen3"]
STEPS = 8
LIB = "kernels/libedgekit_ort.so"


def _ops(art) -> list[str]:
    return [n.op_type for n in onnx.load(str(art.path / "model.onnx"), load_external_data=False).graph.node]


@pytest.mark.parametrize("case", FAMILIES)
def test_every_family_runs_in_edgekit_kernels(onnx_export, model_for, case):
    art = onnx_export(case, "int4", linear_kernel="edgekit")
    model, meta = model_for(case), art.metadata
    val = meta["validation"]
    # the target's own bound held: the reference with the tiled weights is not noisy enough to widen it
    assert val["tolerance"] == val["target_tolerance"] == 1.0
    diff, got = check_greedy("iot", model, art, steps=STEPS)
    assert diff <= 1e-3, f"tiny model, exact arithmetic: max |Δlogit| {diff}"
    prompt = probe_tokens(model.config.vocab_size, 9, seed=7)
    assert _genai_greedy(art.path, prompt, STEPS) == got          # genai_config.json names the kernel library
    ops, layers = _ops(art), model.config.num_layers
    assert ops.count("LinearQ4") == 4 * layers + 1 and ops.count("GatherQ4") == 1
    assert "MatMulNBits" not in ops and "GatherBlockQuantized" not in ops and "Sigmoid" not in ops
    assert ops.count("Split") == (layers if model.config.qk_norm else 0)   # only Qwen3's q/k/v split for its norms
    assert ops.count("GroupQueryAttention") == layers
    assert LIB in art.files and (art.path / LIB).is_file() and meta["custom_op_libraries"] == [LIB]
    config = json.loads((art.path / "genai_config.json").read_text())
    assert config["model"]["decoder"]["session_options"]["custom_ops_library"] == LIB
    assert meta["quantization"]["linear_kernel"] == "edgekit" and meta["min_onnxruntime"] == "1.18"
    assert {o.domain: o.version for o in onnx.load(str(art.path / "model.onnx")).opset_import} == \
        {"": 17, "com.microsoft": 1, "edgekit": 1}


def test_mixed_layers_8bit_table_and_output(onnx_export, model_for):
    """int4 linears in edgekit's kernel beside an 8-bit output layer (MatMulNBits) and an 8-bit table
    (GatherBlockQuantized), block 32: validated and greedy-equal."""
    art = onnx_export("llama", "int4", linear_kernel="edgekit", block_size=32, output_bits=8, embedding_bits=8)
    ops = _ops(art)
    assert ops.count("LinearQ4") == 4 * model_for("llama").config.num_layers and ops.count("MatMulNBits") == 1
    assert ops.count("GatherBlockQuantized") == 1 and "GatherQ4" not in ops
    assert art.metadata["validation"]["max_abs_logit_diff"] <= 1.0
    check_greedy("iot", model_for("llama"), art, steps=STEPS)


def test_int8_kv_cache_with_edgekit_kernels(onnx_export, model_for):
    art = onnx_export("qwen2", "int4", linear_kernel="edgekit", kv_cache="int8")
    assert art.metadata["validation"]["max_abs_logit_diff"] <= 1.0 and "LinearQ4" in _ops(art)
    check_greedy("iot", model_for("qwen2"), art, steps=STEPS)


def test_smollm2_in_edgekit_kernels(smollm2, tmp_path_factory):
    """Real weights (width 576: block 64 chosen), validated on export; the greedy chat continuation against the
    reference within twice its own noise floor (int8 activations, as MatMulNBits at level 4), and onnxruntime-genai
    gives the same tokens as edgekit's session."""
    import edgekit

    out = tmp_path_factory.mktemp("onnx-smollm2-edgekit") / "artifact"
    art = edgekit.export(smollm2, "iot", quant="int4", max_seq_len=96, last_logits_only=True, out=out,
                         show_progress=False, linear_kernel="edgekit")
    meta = art.metadata
    assert meta["quantization"]["block_size"] == 64 and "LinearQ4" in _ops(art)
    assert meta["validation"]["tolerance"] < 10.0   # the noise margin stays bounded on real weights
    tok = smollm2.tokenizer
    prompt = tok.encode(tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}]))
    diff, got = check_greedy("iot", smollm2, art, prompt=prompt, floor_factor=2.0, steps=STEPS)
    # _genai_greedy holds off end-of-sequence until `steps` tokens (min_length): compare up to the answer's end
    end = next((i for i, t in enumerate(got) if t in smollm2.stop_ids), len(got))
    assert _genai_greedy(art.path, prompt, STEPS)[:end] == got[:end]
    log.warning("SmolLM2 edgekit kernels: max |Δlogit| %.3g vs reference, top-1 vs fp32 %.3f, answer %r", diff,
                meta["validation"]["top1_agreement_vs_fp32"], tok.decode(got))
