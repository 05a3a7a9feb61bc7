"""The MIL builder's weights: no copies of an fp16 model, quantized weights equal to the reference's, row chunks exact."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit.targets.base import TargetSpec


def _weight_ops(prog, op_type: str) -> dict:
    return {o.name: o for o in prog.functions["main"].operations if o.op_type == op_type}


def test_fp16_model_weights_become_views_not_copies(checkpoint_dir):
    """An fp16-loaded model's weights go into the program without a copy: the peak-RSS fix for large models."""
    from edgekit_coreml.builder import build_program
    from edgekit_coreml.quant import quant_for

    import edgekit

    model = edgekit.load(checkpoint_dir("qwen2"), dtype=torch.float16)
    prog = build_program(model, TargetSpec(quant="fp16", max_seq_len=16), quant_for("fp16", {}))
    consts = _weight_ops(prog, "const")
    checked = 0
    for name, w in model.weights.items():
        op = consts[name.replace(".", "_")]
        assert np.shares_memory(op.outputs[0].val, w.numpy()), f"{name} was copied into the program"
        checked += 1
    assert checked == len(model.weights) and checked > 10


@pytest.mark.parametrize(("quant", "options"), [("w4", {}), ("w8", {}), ("w4", {"granularity": "per_channel"})])
def test_quantized_weights_equal_the_reference_and_chunks_are_exact(tiny_model, monkeypatch, quant, options):
    """Every constexpr weight dequantizes to exactly what the eager reference computes with (fake_quantize on the
    whole tensor), also when the builder quantizes in chunks of 7 rows (0 tolerance: same fp16 bits)."""
    from edgekit_coreml import builder
    from edgekit_coreml.mil.ops import OPS
    from edgekit_coreml.quant import fake_quantize, quant_for, weight_names

    monkeypatch.setattr(builder, "QUANT_ROWS", 7)  # no tiny weight's row count is a multiple of 7
    model = tiny_model("qwen2")
    q = quant_for(quant, options)
    prog = builder.build_program(model, TargetSpec(quant=quant, max_seq_len=16, options=options), q)
    deq = _weight_ops(prog, "constexpr_blockwise_shift_scale")
    names = weight_names(list(model.weights))
    assert sorted(deq) == sorted(n.replace(".", "_") for n in names)
    for name in names:
        o = deq[name.replace(".", "_")]
        got = OPS[o.op_type](data=o.inputs["data"].val, scale=o.inputs["scale"].val).astype(np.float16)
        want = fake_quantize(model.weights[name], q).to(torch.float16).numpy()
        np.testing.assert_array_equal(got, want, err_msg=name)
