"""The int4 linear with per-group minimums (GGUF Q4_1's grid) inside the runtimes, against the PyTorch reference
(edgekit/kernels/q4.py): a tiny .pte calling edgekit::linear_q4 and edgekit::fused_linear_q4 with mins, run by the
ExecuTorch runtime for a prefill and a decode shape; a tiny ONNX model with LinearQ4 (+mins, both activation modes,
with and without bias) and GatherQ4 (+mins) run by ONNX Runtime."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit.kernels import q4

REL_TOL = 1e-5   # |runtime - reference| <= REL_TOL * max(1, max|reference|): same integer dots, fp32 order differs
K, N, GROUP = 256, 40, 32


def _asym(n: int, k: int, group: int, dtype: torch.dtype, seed: int = 0):
    """Unsigned codes 0..15 and scales / mins exact in `dtype` (a Q4_1 file's fp16 d and m), about -8 d per min."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (n, k), generator=g, dtype=torch.uint8)
    scales = (torch.rand(n, k // group, generator=g) * 0.02 + 1e-3).to(dtype).float()
    mins = (-8 * scales * (1 + 0.3 * torch.randn(n, k // group, generator=g))).to(dtype).float()
    return codes, scales, mins


def _close(got, want) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    err = float(np.abs(got - want).max())
    tol = REL_TOL * max(1.0, float(np.abs(want).max()))
    assert err <= tol, f"max |Δ| {err:.3g} > {tol:.3g}"


# ---------------------------------------------------------------- ExecuTorch
class TwoLinears(torch.nn.Module):
    """edgekit::linear_q4 (fp16 scales and mins) then edgekit::fused_linear_q4 (bf16, RMSNorm prologue, residual)."""

    def __init__(self):
        super().__init__()
        pytest.importorskip("executorch")
        from edgekit_executorch.kernels.fused_block import Q4Weights  # noqa: F401  (registers the fused op)
        from edgekit_executorch.kernels.linear_q4 import Q4Linear

        codes, scales, mins = _asym(N, K, GROUP, torch.float16)
        self.first = Q4Linear(codes, scales, GROUP, torch.randn(N), mins=mins, scale_dtype=torch.float16)
        codes2, scales2, mins2 = _asym(N - 8, N - 8, 8, torch.bfloat16, seed=1)
        self.second = Q4Linear(codes2, scales2, 8, None, mins=mins2)
        self.register_buffer("norm", torch.rand(N - 8) + 0.5)

    def forward(self, x):
        h = self.first(x)[..., : N - 8]
        s = self.second
        y = torch.ops.edgekit.fused_linear_q4(h, s.packed, s.scales, s.rowsum, s.bias, s.group_size, s.out_features,
                                              self.norm, 1e-6, False, h, s.mins)
        return y


@pytest.fixture(scope="module")
def pte(tmp_path_factory, kernel_lib):
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge

    torch.manual_seed(0)
    model = TwoLinears().eval()
    t = torch.export.Dim("t", min=1, max=32)
    with torch.no_grad():
        ep = torch.export.export(model, (torch.randn(1, 5, K),), dynamic_shapes=({1: t},), strict=False)
        prog = to_edge(ep.run_decompositions({}), compile_config=EdgeCompileConfig(_check_ir_validity=False))
        et = prog.to_executorch(ExecutorchBackendConfig())
    ops = {str(n.target) for n in et.exported_program().graph.nodes if n.op == "call_function"}
    assert {"edgekit.linear_q4.out", "edgekit.fused_linear_q4.out"} <= ops, ops
    path = tmp_path_factory.mktemp("pte-mins") / "mins.pte"
    path.write_bytes(et.buffer)
    return path, model


@pytest.mark.parametrize("tokens", [1, 19], ids=["decode", "prefill"])
def test_pte_with_mins_runs_in_executorch(pte, tokens):
    from edgekit_executorch.kernels.linear_q4 import reference_fused_linear_q4
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    path, model = pte
    x = torch.randn(1, tokens, K) * 3
    got = _load_for_executorch(str(path)).forward((x,))[0]
    f, s = model.first, model.second
    h = q4.reference_linear_q4(x, f.packed, f.scales, f.rowsum, f.bias, GROUP, N, mins=f.mins)[..., : N - 8]
    want = reference_fused_linear_q4(h, s.packed, s.scales, s.rowsum, s.bias, 8, N - 8, model.norm, 1e-6, False,
                                     h, s.mins)
    assert torch.allclose(model(x), want)   # the eager module is the same computation
    _close(got.numpy(), want.numpy())


def test_modules_from_quantized_tensors_compute_their_weights(kernel_lib):
    """Q4Linear / Q4Weights.from_quantized take QuantizedTensor's convention (codes 0..15; symmetric w = s (codes - 8),
    else s codes + m), pick the lossless scale dtype, and the kernel computes the dequantized weights."""
    from types import SimpleNamespace

    from edgekit_executorch.kernels import direct
    from edgekit_executorch.kernels.fused_block import Q4Weights
    from edgekit_executorch.kernels.linear_q4 import Q4Linear

    def qt(seed, mins=True):
        codes, scales, m = _asym(N, K, GROUP, torch.float16, seed)
        return SimpleNamespace(codes=codes, scales=scales, mins=m if mins else None, bits=4, group_size=GROUP)

    def dense(t):
        w = t.codes.float().view(N, -1, GROUP) - (0 if t.mins is not None else 8)
        w = w * t.scales[..., None] + (0 if t.mins is None else t.mins[..., None])
        return w.view(N, K)

    x = torch.randn(4, K) * 2
    for t in (qt(0), qt(1, mins=False)):
        lin = Q4Linear.from_quantized(t)
        assert lin.scales.dtype == torch.float16 and (lin.mins is None) == (t.mins is None)
        want = torch.nn.functional.linear(q4.fake_quantize_activations(x), dense(t))
        _close(lin(x).numpy(), want.numpy())
    a, b = qt(2), qt(3)
    stacked = Q4Weights.from_quantized([a, b], [None, torch.ones(N)])
    got = direct.linear_q4(x, stacked.packed, stacked.scales, stacked.rowsum, stacked.bias, GROUP, 2 * N,
                           mins=stacked.mins)
    want = torch.nn.functional.linear(q4.fake_quantize_activations(x), torch.cat([dense(a), dense(b)]),
                                      torch.cat([torch.zeros(N), torch.ones(N)]))
    _close(got.numpy(), want.numpy())


# ---------------------------------------------------------------- ONNX Runtime
@pytest.fixture(scope="module")
def ort_lib():
    pytest.importorskip("onnxruntime")
    from edgekit_onnx.kernels import build

    return build.build_library()


def _tensor(name, t: torch.Tensor):
    from onnx import TensorProto, helper

    kinds = {torch.uint8: TensorProto.UINT8, torch.float32: TensorProto.FLOAT, torch.float16: TensorProto.FLOAT16,
             torch.bfloat16: TensorProto.BFLOAT16}
    raw = t.view(torch.int16) if t.dtype in (torch.float16, torch.bfloat16) else t
    return helper.make_tensor(name, kinds[t.dtype], t.shape, raw.contiguous().numpy().tobytes(), raw=True)


def _session(lib, nodes, inputs, outputs, inits):
    import onnxruntime as ort
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("edgekit", 1)])
    model.ir_version = 9
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.register_custom_ops_library(str(lib))
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_onnx_linear_q4_and_gather_q4_with_mins(ort_lib, dtype, bias):
    from onnx import TensorProto, helper

    codes, scales, mins = _asym(N, K, GROUP, dtype, seed=2)
    packed, s, rowsum, m = q4.pack(codes, scales, GROUP, mins=mins, scale_dtype=dtype)
    b = torch.randn(N)
    inits = [_tensor("p", packed), _tensor("s", s), _tensor("r", rowsum), _tensor("m", m)] + \
        ([_tensor("b", b)] if bias else [])
    lin_in = ["x", "p", "s", "r", "b" if bias else "", "m"]   # an absent bias before mins: an empty name
    nodes = [helper.make_node("LinearQ4", lin_in, ["y_group"], domain="edgekit", K=K, N=N, group_size=GROUP,
                              act_per_group=1),
             helper.make_node("LinearQ4", lin_in, ["y_token"], domain="edgekit", K=K, N=N, group_size=GROUP,
                              act_per_group=0),
             helper.make_node("GatherQ4", ["p", "s", "ids", "m"], ["rows"], domain="edgekit", K=K, N=N,
                              group_size=GROUP)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, None, K]),
              helper.make_tensor_value_info("ids", TensorProto.INT64, [1, None])]
    outputs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ("y_group", "y_token", "rows")]
    sess = _session(ort_lib, nodes, inputs, outputs, inits)
    ids = np.array([[0, N - 1, 17, 17, 5]], dtype=np.int64)
    for tokens in (1, 11):
        x = torch.randn(1, tokens, K) * 3
        y_group, y_token, rows = sess.run(None, {"x": x.numpy(), "ids": ids})
        bb = b if bias else None
        _close(y_group, q4.reference_linear_q4(x, packed, s, rowsum, bb, GROUP, N, act_per_group=True, mins=m))
        _close(y_token, q4.reference_linear_q4(x, packed, s, rowsum, bb, GROUP, N, act_per_group=False, mins=m))
    dense = q4.unpack(packed, s, GROUP, N, K, mins=m)
    assert np.array_equal(rows[0], dense[ids[0]].numpy())   # exact: the table's own weights, codes * s + m


def test_onnx_mins_of_another_dtype_are_refused(ort_lib):
    from onnx import TensorProto, helper

    codes, scales, mins = _asym(N, K, GROUP, torch.float16)
    packed, s, rowsum, m = q4.pack(codes, scales, GROUP, mins=mins, scale_dtype=torch.float16)
    inits = [_tensor("p", packed), _tensor("s", s), _tensor("r", rowsum), _tensor("m", m.to(torch.bfloat16))]
    node = helper.make_node("LinearQ4", ["x", "p", "s", "r", "", "m"], ["y"], domain="edgekit", K=K, N=N,
                            group_size=GROUP)
    sess = _session(ort_lib, [node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, K])],
                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    with pytest.raises(Exception, match="mins must have the scales' type"):
        sess.run(None, {"x": np.zeros((1, K), np.float32)})
