"""edgekit's 8-bit ONNX Runtime ops (LinearQ8, GatherQ8) on a table in MatMulNBits' 8-bit layout with fp16 scales,
against an exact emulation in numpy; and LinearQ4 without its rowsum (per-group activations never read it)."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from edgekit_onnx.kernels import build
from onnx import TensorProto, helper

from edgekit.kernels import q4

REL_TOL = 1e-5   # the same integer dots as the emulation; only fp32 summation order differs


@pytest.fixture(scope="module")
def kernel_lib():
    return build.build_library()


def _session(lib, node, inputs, inits, threads=2, extra_opsets=()):
    graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("edgekit", 1), *extra_opsets]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 9
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.register_custom_ops_library(str(lib))
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _init(name, array, dtype):
    return helper.make_tensor(name, dtype, array.shape, np.ascontiguousarray(array).tobytes(), raw=True)


def _table8(n, k, group, seed=0):
    """Codes -128..127 (Q8_0 writes -127..127; -128 is the AVX2 path's edge) stored as code + 128 [N, K/G, G], fp16
    scales [N, K/G]."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(-128, 128, (n, k // group, group)).astype(np.int16)
    codes[0, 0, :] = -128
    scales = (rng.random((n, k // group)) * 0.01 + 1e-4).astype(np.float16)
    return (codes + 128).astype(np.uint8), scales


def _emulate(x, packed, scales, group):
    """y = sum_b a_b d_b sum q (c - 128), activations per group as q4.quantize_row_groups (float32 arithmetic)."""
    m, k = x.shape
    xb = x.reshape(m, k // group, group).astype(np.float32)
    a = (np.abs(xb).max(-1) / np.float32(127)).astype(np.float32)
    inv = np.where(a != 0, np.float32(1) / np.where(a != 0, a, 1), 0).astype(np.float32)
    q = np.clip(np.rint(xb * inv[..., None]), -128, 127).astype(np.int64)
    c = packed.astype(np.int64) - 128                                 # [N, KB, G]
    dots = np.einsum("mbg,nbg->mnb", q, c).astype(np.float64)         # exact integers
    return (dots * a[:, None, :].astype(np.float64) * scales.astype(np.float64)[None]).sum(-1)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("m,n,k,group", [
    (1, 4096, 576, 32),    # a decode step of SmolLM2's output layer (a slice of it), 18 groups
    (7, 300, 608, 32),     # prefill, 19 groups, N not a multiple of any chunk
    (3, 64, 256, 64),      # two 32-byte vectors per group
    (2, 50, 96, 16),       # groups of 16: the portable path
])
def test_linear_q8_matches_the_emulation(kernel_lib, m, n, k, group, threads):
    packed, scales = _table8(n, k, group, seed=m)
    node = helper.make_node("LinearQ8", ["x", "p", "s"], ["y"], domain="edgekit", K=k, N=n, group_size=group)
    inits = [_init("p", packed, TensorProto.UINT8), _init("s", scales.view(np.uint16), TensorProto.FLOAT16)]
    sess = _session(kernel_lib, node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, None, k])], inits,
                    threads)
    x = (np.random.default_rng(1).standard_normal((1, m, k)) * 3).astype(np.float32)
    x[0, 0, :group] = 0.0                                              # an all-zero group: scale 0, q = 0
    got = sess.run(None, {"x": x})[0]
    assert got.shape == (1, m, n)
    want = _emulate(x[0], packed, scales, group)
    err = float(np.abs(got[0] - want).max())
    assert err <= REL_TOL * max(1.0, float(np.abs(want).max())), err


def test_linear_q8_runs_simd_where_the_build_has_avx2(kernel_lib):
    import ctypes

    from edgekit.kernels import build as core_build

    isa = ctypes.CDLL(str(kernel_lib)).edgekit_ort_q8_isa
    isa.restype = ctypes.c_char_p
    assert isa().decode() == ("avx2" if "-mavx2" in core_build.isa_flags() else "portable")


def test_linear_q8_is_matmulnbits_8bit_level_4(kernel_lib):
    """The same table through ORT's MatMulNBits (fp32 scales, the fp16 values widened): the same arithmetic."""
    n, k, group = 256, 576, 32
    packed, scales = _table8(n, k, group, seed=5)
    x = (np.random.default_rng(2).standard_normal((4, k)) * 2).astype(np.float32)
    mnb = helper.make_node("MatMulNBits", ["x", "wq", "ws"], ["y"], domain="com.microsoft", K=k, N=n, bits=8,
                           block_size=group, accuracy_level=4)
    ref = _session(kernel_lib, mnb, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, k])],
                   [_init("wq", packed, TensorProto.UINT8), _init("ws", scales.astype(np.float32), TensorProto.FLOAT)],
                   extra_opsets=[helper.make_opsetid("com.microsoft", 1)]).run(None, {"x": x})[0]
    node = helper.make_node("LinearQ8", ["x", "p", "s"], ["y"], domain="edgekit", K=k, N=n, group_size=group)
    got = _session(kernel_lib, node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, k])],
                   [_init("p", packed, TensorProto.UINT8), _init("s", scales.view(np.uint16), TensorProto.FLOAT16)]
                   ).run(None, {"x": x})[0]
    assert float(np.abs(got - ref).max()) <= REL_TOL * max(1.0, float(np.abs(ref).max()))


def test_gather_q8_returns_the_rows_exactly(kernel_lib):
    n, k, group = 77, 576, 32
    packed, scales = _table8(n, k, group)
    node = helper.make_node("GatherQ8", ["p", "s", "ids"], ["y"], domain="edgekit", K=k, N=n, group_size=group)
    inits = [_init("p", packed, TensorProto.UINT8), _init("s", scales.view(np.uint16), TensorProto.FLOAT16)]
    sess = _session(kernel_lib, node, [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, None])], inits)
    ids = np.array([[0, n - 1, 17, 17, 5]], dtype=np.int64)
    got = sess.run(None, {"ids": ids})[0]
    want = ((packed.astype(np.float32) - 128) * scales.astype(np.float32)[..., None]).reshape(n, k)[ids[0]]
    assert got.shape == (1, 5, k) and np.array_equal(got[0], want)   # exact: an int8 times an fp16 value


def test_q8_ops_reject_bad_arguments_by_name(kernel_lib):
    packed, scales = _table8(40, 256, 32)
    inits = [_init("p", packed, TensorProto.UINT8), _init("s", scales.view(np.uint16), TensorProto.FLOAT16)]
    x_info = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, None])]
    wrong_n = helper.make_node("LinearQ8", ["x", "p", "s"], ["y"], domain="edgekit", K=256, N=41, group_size=32)
    with pytest.raises(Exception, match="packed / scales hold 10240 / 320 elements; N=41 K=256 group_size=32 needs"):
        _session(kernel_lib, wrong_n, x_info, inits).run(None, {"x": np.zeros((1, 256), np.float32)})
    ok = helper.make_node("LinearQ8", ["x", "p", "s"], ["y"], domain="edgekit", K=256, N=40, group_size=32)
    with pytest.raises(Exception, match="X's last dimension must be K=256, got 200"):
        _session(kernel_lib, ok, x_info, inits).run(None, {"x": np.zeros((1, 200), np.float32)})
    fp32 = [inits[0], _init("s", scales.astype(np.float32), TensorProto.FLOAT)]
    with pytest.raises(Exception, match="scales must be float16, got float"):
        _session(kernel_lib, ok, x_info, fp32).run(None, {"x": np.zeros((1, 256), np.float32)})
    gather = helper.make_node("GatherQ8", ["p", "s", "ids"], ["y"], domain="edgekit", K=256, N=40, group_size=32)
    with pytest.raises(Exception, match="index 40 is outside the table's 40 rows"):
        _session(kernel_lib, gather, [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])], inits).run(
            None, {"ids": np.array([3, 40], np.int64)})


def test_linear_q4_per_group_needs_no_rowsum(kernel_lib):
    n, k, group = 48, 256, 32
    torch.manual_seed(0)
    packed, scales, rowsum = q4.pack(torch.randint(-8, 8, (n, k), dtype=torch.int8), torch.rand(n, k // group) * 0.02,
                                     group)
    inits = [_init("p", packed.numpy(), TensorProto.UINT8),
             _init("s", scales.view(torch.int16).numpy(), TensorProto.BFLOAT16)]
    x = torch.randn(3, k)
    x_info = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, k])]
    node = helper.make_node("LinearQ4", ["x", "p", "s"], ["y"], domain="edgekit", K=k, N=n, group_size=group)
    got = _session(kernel_lib, node, x_info, inits).run(None, {"x": x.numpy()})[0]
    want = q4.reference_linear_q4(x, packed, scales, rowsum, None, group, n, act_per_group=True).numpy()
    assert float(np.abs(got - want).max()) <= REL_TOL * max(1.0, float(np.abs(want).max()))
    per_token = helper.make_node("LinearQ4", ["x", "p", "s"], ["y"], domain="edgekit", K=k, N=n, group_size=group,
                                 act_per_group=0)
    with pytest.raises(Exception, match="act_per_group=0 .* needs the rowsum input"):
        _session(kernel_lib, per_token, x_info, inits).run(None, {"x": x.numpy()})
