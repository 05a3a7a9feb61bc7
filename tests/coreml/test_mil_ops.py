"""Every op the evaluator implements, checked against coremltools' own op semantics (value_inference) on random
inputs; ops without value_inference in coremltools (linear's is there, states are not) get a direct check."""
from __future__ import annotations

import numpy as np
import pytest
from edgekit_coreml.mil.ops import OPS

rng = np.random.default_rng(0)


def coremltools_value(op_type: str, **inputs):
    """Build `op_type` on const inputs in a pymil program (iOS 18 opset); return (op, its value_inference result)."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb

    box = {}

    @mb.program(input_specs=[mb.TensorSpec(shape=(1,))], opset_version=ct.target.iOS18)
    def prog(dummy):
        out = getattr(mb, op_type)(**inputs)
        box["op"] = (out[0] if isinstance(out, (list, tuple)) else out).op
        return dummy

    op = box["op"]
    if op_type.startswith("constexpr_"):
        return op, op.materialized_val_inference()
    return op, op.outputs[0].val


def ours(op):
    """The evaluator's value: the op function, cast to the dtype the program declares (as MILProgram does)."""
    from edgekit_coreml.mil.program import _np_dtype

    args = {k: ([x.val for x in v] if isinstance(v, (list, tuple)) else v.val) for k, v in op.inputs.items()}
    return np.asarray(OPS[op.op_type](**args)).astype(_np_dtype(op.outputs[0].dtype))


def f32(*shape):
    return rng.standard_normal(shape).astype(np.float32)


CASES = {
    "add": {"x": f32(2, 3, 4), "y": f32(4)},
    "sub": {"x": f32(2, 3), "y": f32(2, 3)},
    "mul": {"x": f32(1, 5, 4), "y": np.float32(-1.0)},
    "real_div": {"x": f32(3, 4), "y": np.abs(f32(3, 4)) + 0.5},
    "pow": {"x": np.abs(f32(3, 4)) + 0.1, "y": np.float32(2.0)},
    "minimum": {"x": f32(6), "y": f32(6)},
    "maximum": {"x": f32(6), "y": f32(6)},
    "equal": {"x": np.array([1, -1, 3, -1], np.int32), "y": np.int32(-1)},
    "greater_equal": {"x": np.array([1, -1, 0, -3], np.int32), "y": np.int32(0)},  # gather index canonicalization
    "rsqrt": {"x": np.abs(f32(2, 7)) + 0.1, "epsilon": np.float32(1e-6)},
    "clip": {"x": f32(3, 5) * 3, "alpha": np.float32(-1.0), "beta": np.float32(2.0)},
    "abs": {"x": f32(4, 3)},
    "inverse": {"x": np.abs(f32(3, 4)) + 0.5, "epsilon": np.float32(1e-4)},
    "reduce_max": {"x": f32(1, 3, 16), "axes": [-1], "keep_dims": True},
    "silu": {"x": f32(3, 9)},
    "gelu": {"x": f32(3, 9) * 3, "mode": "TANH_APPROXIMATION"},   # Gemma 3's GeGLU
    # the ring cache's position arithmetic (builder.ring_positions) and its mask
    "mod": {"x": np.array([0, 5, 37, 38, 75], np.int32), "y": np.int32(38)},
    "less": {"x": np.array([[0, 5, 6, 9]], np.int32), "y": np.int32(6)},
    "logical_and": {"x": np.array([True, True, False, False]), "y": np.array([True, False, True, False])},
    "cast_bool": {"x": np.array([[True, False, True]]), "dtype": "fp16"},
    "sigmoid": {"x": f32(3, 9)},
    "softmax": {"x": f32(2, 3, 8), "axis": -1},
    "exp": {"x": f32(4)},
    "reduce_mean": {"x": f32(1, 3, 16), "axes": [-1], "keep_dims": True},
    "reduce_sum": {"x": f32(2, 3, 4), "axes": [0, 2], "keep_dims": False},
    "matmul": {"x": f32(2, 3, 4), "y": f32(2, 5, 4), "transpose_x": False, "transpose_y": True},
    "linear": {"x": f32(1, 3, 8), "weight": f32(6, 8), "bias": f32(6)},
    "cast": {"x": f32(3, 4) * 100, "dtype": "int32"},
    "gather": {"x": f32(10, 4), "indices": np.array([[0, 9, 3]], np.int32), "axis": 0},
    "concat": {"values": [f32(1, 2, 3), f32(1, 4, 3)], "axis": 1},
    "reshape": {"x": f32(1, 6, 16), "shape": np.array([1, -1, 4, 4], np.int32)},
    "transpose": {"x": f32(1, 3, 2, 4), "perm": [0, 2, 1, 3]},
    "expand_dims": {"x": f32(3, 4), "axes": [0, -1]},
    "squeeze": {"x": f32(1, 3, 1), "axes": [0]},
    "tile": {"x": f32(1, 2, 1, 3), "reps": [1, 1, 2, 1]},
    "select": {"cond": np.array([True, False, True]), "a": f32(3), "b": f32(3)},
    "shape": {"x": f32(2, 5, 3)},
    "slice_by_index": {"x": f32(1, 4, 6, 8), "begin": np.array([0, 1, 2, 4], np.int32),
                           "end": np.array([1, 3, 0, 1], np.int32), "end_mask": [True, False, True, True]},
    "slice_update": {"x": f32(1, 2, 8, 4), "update": f32(1, 2, 3, 4), "begin": np.array([0, 0, 5, 0], np.int32),
                         "end": np.array([1, 2, 8, 4], np.int32)},
    "scaled_dot_product_attention": {"query": f32(1, 4, 3, 8), "key": f32(1, 4, 6, 8), "value": f32(1, 4, 6, 8),
                                         "attn_mask": np.where(rng.random((3, 6)) < 0.3, -1e4, 0).astype(np.float32)},
    "constexpr_blockwise_shift_scale": {"data": rng.integers(-8, 8, (4, 64)).astype(np.int8),
                                            "scale": np.abs(f32(4, 2)).astype(np.float16) + np.float16(0.01)},
}


def op_type_of(case: str) -> str:
    """The op type a case checks: a few ops have a second case under another name."""
    return {"cast_bool": "cast"}.get(case, case)


def _torch_silu(x):
    import torch

    return torch.nn.functional.silu(torch.from_numpy(x)).numpy()


# ops whose coremltools class has no value_inference: checked against PyTorch's definition instead
NO_VALUE_INFERENCE = {"silu": lambda inputs: _torch_silu(inputs["x"])}


@pytest.mark.parametrize("case", sorted(CASES))
def test_op_matches_coremltools_value_inference(case):
    op_type = op_type_of(case)
    op, expected = coremltools_value(op_type, **CASES[case])
    if op_type in NO_VALUE_INFERENCE:
        assert expected is None, f"coremltools now has value_inference for {op_type}: compare against it"
        expected = NO_VALUE_INFERENCE[op_type](CASES[case])
    assert expected is not None, f"coremltools computed no value for {op_type}"
    got = ours(op)
    expected = np.asarray(expected)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.astype(np.float64), expected.astype(np.float64), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["EXACT", "SIGMOID_APPROXIMATION", "TANH_APPROXIMATION"])
def test_gelu_modes_match_torch(mode):
    """Beyond value_inference: the tanh mode is torch's gelu(approximate='tanh'), the one Gemma's eager graph uses."""
    import torch

    x = f32(4, 33) * 4
    got = OPS["gelu"](x, mode=mode)
    t = torch.from_numpy(x)
    want = {"EXACT": torch.nn.functional.gelu(t), "TANH_APPROXIMATION": torch.nn.functional.gelu(t, approximate="tanh"),
            "SIGMOID_APPROXIMATION": t * torch.sigmoid(1.702 * t)}[mode].numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rows", [[3, 4, 5], [6, 7, 0, 1], [2]])  # in order, wrapping past the end, one row
def test_scatter_update_matches_torch_index_copy(rows):
    """coremltools' scatter has no value_inference: checked against torch's index_copy_, the eager ring's write (the
    rows are distinct, as builder.ring_positions makes them). The op is built through pymil to check its signature."""
    import coremltools as ct
    import torch
    from coremltools.converters.mil import Builder as mb

    data, updates = f32(1, 2, 8, 4), f32(1, 2, len(rows), 4)
    idx = np.array(rows, np.int32)
    box = {}

    @mb.program(input_specs=[mb.TensorSpec(shape=(1,))], opset_version=ct.target.iOS18)
    def prog(dummy):
        box["op"] = mb.scatter(data=data, indices=idx, updates=updates, axis=2, mode="update").op
        return dummy

    want = torch.from_numpy(data.copy()).index_copy_(2, torch.from_numpy(idx).long(), torch.from_numpy(updates))
    np.testing.assert_array_equal(ours(box["op"]), want.numpy())


def test_scatter_refuses_indices_outside_the_data():
    with pytest.raises(IndexError, match="outside 0..7"):
        OPS["scatter"](f32(1, 8, 2), np.array([8], np.int32), f32(1, 1, 2), axis=1)
    with pytest.raises(IndexError):
        OPS["scatter"](f32(1, 8, 2), np.array([-1], np.int32), f32(1, 1, 2), axis=1)


def test_int4_blockwise_with_offset():
    data = rng.integers(-8, 8, (8, 32)).astype(np.int8)
    scale = (np.abs(f32(8, 1)) + 0.01).astype(np.float32)
    offset = rng.integers(-2, 2, (8, 1)).astype(np.int8)
    op, expected = coremltools_value("constexpr_blockwise_shift_scale", data=data, scale=scale, offset=offset)
    np.testing.assert_allclose(ours(op), expected, rtol=1e-6)


def test_reduce_mean_accepts_numpy_bool_keep_dims():
    # numpy 2 rejects np.bool_ for keepdims in some reductions; the evaluator must normalise it
    x = f32(2, 3)
    assert OPS["reduce_mean"](x, axes=np.array([1]), keep_dims=np.bool_(True)).shape == (2, 1)


DIRECT_CHECKS = {"scatter"}   # ops checked against torch above, not value_inference


def test_every_op_in_our_programs_is_checked(coreml_export, coreml_gemma3, mil_function):
    """Each non-const op type in the exported fp16 / w4 programs (Gemma 3's too) has a value_inference case above, a
    direct check, or is a state op, covered by test_states_persist_across_calls."""
    seen = set()
    for case, quant in (("llama", "w4"), ("qwen3", "fp16"), ("qwen2", "w8")):
        seen |= {o.op_type for o in mil_function(coreml_export(case, quant)).operations}
    seen |= {o.op_type for o in mil_function(coreml_gemma3("fp16")).operations}
    missing = sorted(seen - {op_type_of(c) for c in CASES} - DIRECT_CHECKS - {"const", "read_state",
                                                                           "coreml_update_state"})
    assert not missing, f"ops in exported programs without an op-level check: {missing}"


def test_states_persist_across_calls(tmp_path):
    """A stateful accumulator (read_state + coreml_update_state) saved as .mlpackage, run by the evaluator."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import types
    from edgekit_coreml.mil.program import MILProgram

    @mb.program(input_specs=[mb.TensorSpec((1, 4), dtype=types.fp16),
                             mb.StateTensorSpec((1, 4), dtype=types.fp16)], opset_version=ct.target.iOS18)
    def prog(x, acc):
        total = mb.add(x=mb.read_state(input=acc), y=x)
        mb.coreml_update_state(state=acc, value=total)
        return mb.mul(x=total, y=np.float16(2.0), name="out")

    model = ct.convert(prog, minimum_deployment_target=ct.target.iOS18, skip_model_load=True)
    model.save(str(tmp_path / "acc.mlpackage"))
    p = MILProgram(tmp_path / "acc.mlpackage")
    name = p.input_names[0]
    out = p.output_names[0]
    x = np.array([[1, 2, 3, 4]], np.float16)
    np.testing.assert_array_equal(p.run({name: x})[out], 2 * x)
    np.testing.assert_array_equal(p.run({name: x})[out], 4 * x)
    p.reset()
    np.testing.assert_array_equal(p.run({name: x})[out], 2 * x)
