"""quant 'source' on Core ML: a GGUF's own grids in constexpr_blockwise_shift_scale (the file's codes shifted to signed
int4 / int8, its d as the fp16 scale, a Q4_1 minimum as a per-group correction), so the ML program computes the file's
own weights. Numerics through edgekit's MIL evaluator against the eager fp32 graph of the same file."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import edgekit
from edgekit.errors import UnsupportedOption

MAX_SEQ_LEN = 32   # conftest's: the fixtures' cache length
SEQ = MAX_SEQ_LEN - 1


def _kl_and_diff(model, artifact) -> tuple[float, float]:
    from edgekit_coreml import CoreMLTarget

    ids = torch.randint(1, model.config.vocab_size, (1, SEQ), generator=torch.Generator().manual_seed(0))
    sess = CoreMLTarget().session(artifact, runtime="evaluator")
    got = torch.from_numpy(sess.forward(ids.numpy(), np.arange(SEQ, dtype=np.int64)))[0].double()
    with torch.no_grad():
        ref = model.decoder(MAX_SEQ_LEN, False, dtype=torch.float32)(ids, torch.arange(SEQ))[0].double()
    p, q = ref.log_softmax(-1), got.log_softmax(-1)
    return float((p.exp() * (p - q)).sum(-1).mean()), float((got - ref).abs().max())


def test_the_program_computes_the_files_weights(gguf_llama, coreml_source):
    kinds = {t.source for t in gguf_llama.source_quant.values()}
    assert kinds == {"gguf:Q4_1", "gguf:Q4_0", "gguf:Q8_0", "gguf:Q5_0"}
    record = coreml_source.metadata["source_grids"]
    assert set(record["kept"]) == kinds and record["float"] == [] and record["rounded_to_fp16"] == []
    assert coreml_source.metadata["validation"]["max_abs_logit_diff"] <= 3e-2     # vs the reference, fp16 program
    kl, diff = _kl_and_diff(gguf_llama, coreml_source)
    # against the file's dequantized weights in fp32, what is left is the fp16 program's rounding: measured KL 1e-8,
    # max |Δlogit| 7e-4 on this model (KL 0.001 is the bound asked for; a grid off by one code per group costs more)
    assert kl <= 1e-6 and diff <= 5e-3, (kl, diff)


def test_the_package_holds_the_files_codes_scales_and_minimums(gguf_llama, coreml_source, mil_function):
    from coremltools.converters.mil.mil import types

    fn = mil_function(coreml_source)
    ops = {o.name: o for o in fn.operations}
    consts = {o.outputs[0].name: o.outputs[0].val for o in fn.operations if o.op_type == "const"}
    for name, t in gguf_llama.source_quant.items():
        stem = name.replace(".", "_")
        op = ops[stem]
        assert op.op_type == "constexpr_blockwise_shift_scale" and op.offset is None
        zero = 1 << (t.bits - 1)
        data = np.asarray(op.data.val).astype(np.int16)
        # the file's own codes, shifted to signed (no re-quantization: every code equal)
        np.testing.assert_array_equal(data + zero, t.codes.numpy().astype(np.int16))
        assert types.builtin_to_string(op.data.dtype) == ("int4" if t.bits <= 4 else "int8"), name
        np.testing.assert_array_equal(np.asarray(op.scale.val).astype(np.float32), t.scales.numpy())   # d, exact
        corr = consts.get(stem + "_correction")
        if t.mins is None:
            assert corr is None, name
        else:   # m + z * d held exactly in fp16, so m is recovered exactly
            np.testing.assert_array_equal(corr.astype(np.float32) - np.float32(zero) * t.scales.numpy(),
                                          t.mins.numpy())
    asymmetric = {n.replace(".", "_") for n, t in gguf_llama.source_quant.items() if t.mins is not None}
    corrected = {o.weight.name.removesuffix("_correction") for o in fn.operations if o.op_type == "linear"
                 and o.weight.name.endswith("_correction")}
    gathered = {o.x.name.removesuffix("_correction") for o in fn.operations if o.op_type == "gather"
                and o.x.name.endswith("_correction")}
    # every Q4_1 linear adds its correction; the Q4_1 embedding's rows get theirs gathered
    assert corrected == asymmetric - {"tok_embeddings_weight"} and gathered == {"tok_embeddings_weight"}


def test_size_is_the_files_blocks(gguf_llama, coreml_source):
    """4-bit codes + fp16 scale (+ fp16 correction) per 32 weights: Q4_1's own 20 bytes, Q8_0's 34."""
    weights = sum(f.stat().st_size for f in (coreml_source.path / "model.mlpackage").rglob("weight.bin"))
    expected = 0
    for t in gguf_llama.source_quant.values():
        n, k = t.shape
        expected += n * k * (4 if t.bits <= 4 else 8) // 8 + (n * k // t.group_size) * 2 * (1 if t.mins is None else 2)
    assert expected <= weights <= expected * 1.1 + 64 * 1024, (weights, expected)


def test_source_needs_a_quantized_checkpoint(tiny_model, tmp_path):
    with pytest.raises(UnsupportedOption, match="quant 'source' keeps a quantized checkpoint's own grids"):
        edgekit.export(tiny_model("llama"), "ios", quant="source", max_seq_len=MAX_SEQ_LEN, out=tmp_path / "a",
                       show_progress=False)
    assert not (tmp_path / "a").exists()


def test_source_fixes_groups_and_bits(gguf_llama, tmp_path):
    with pytest.raises(UnsupportedOption, match="block_size cannot be set with quant 'source'"):
        edgekit.export(gguf_llama, "ios", quant="source", block_size=32, max_seq_len=MAX_SEQ_LEN, out=tmp_path / "a",
                       show_progress=False)


def test_a_quantized_checkpoint_keeps_its_grids_by_default(gguf_llama, tiny_model, tmp_path):
    art = edgekit.export(gguf_llama, "ios", max_seq_len=MAX_SEQ_LEN, out=tmp_path / "g", show_progress=False,
                         validate=False)
    assert art.metadata["quant"] == "source"
    art = edgekit.export(tiny_model("llama"), "ios", max_seq_len=MAX_SEQ_LEN, out=tmp_path / "f", show_progress=False,
                         validate=False)
    assert art.metadata["quant"] == "fp16"   # a float checkpoint: the target's default
