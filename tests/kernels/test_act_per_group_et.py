"""edgekit's ExecuTorch int4 ops with `act_per_group=True` (activations int8 per group of the weight's group,
llama.cpp's Q8_1) in the ExecuTorch runtime vs the PyTorch reference: linear_q4 (fp16 scales + mins), fused_linear_q4
(SwiGLU prologue, residual) and qkv_rope_q4 (RMSNorm, rotary), prefill and decode shapes. Without the flag the ops
keep their original arity in the graph (today's .pte programs are unchanged)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit.kernels import q4

REL_TOL = 1e-5   # same integer dots as the reference, fp32 summation order differs
K, N, GROUP = 128, 48, 32
HQ, HKV, D = 2, 1, 16        # qkv_rope_q4: N = (2 + 2) * 16 = 64


def _grid(n, k, seed):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (n, k), generator=g, dtype=torch.uint8)
    scales = (torch.rand(n, k // GROUP, generator=g) * 0.02 + 1e-3).half().float()
    mins = (-8 * scales * (1 + 0.3 * torch.randn(n, k // GROUP, generator=g))).half().float()
    return codes, scales, mins


class ThreeOps(torch.nn.Module):
    def __init__(self):
        super().__init__()
        from edgekit_executorch.kernels.fused_block import Q4Weights  # noqa: F401  (registers the fused ops)
        from edgekit_executorch.kernels.linear_q4 import Q4Linear

        def q4linear(n, seed, bias=None):
            codes, scales, mins = _grid(n, K, seed)
            return Q4Linear(codes, scales, GROUP, bias, mins=mins, scale_dtype=torch.float16, act_per_group=True)

        self.lin, self.down, self.qkv = q4linear(N, 0, torch.randn(N)), q4linear(K, 1), q4linear((HQ + 2 * HKV) * D, 2)
        self.register_buffer("norm", torch.rand(K) + 0.5)

    def forward(self, x, cos, sin):
        a = self.lin(x)                                                     # [.., N]
        gu = torch.cat([x, x * 0.5], dim=-1)                                # [.., 2K]: SwiGLU input
        d = self.down
        y = torch.ops.edgekit.fused_linear_q4(gu, d.packed, d.scales, d.rowsum, d.bias, GROUP, K, None, 0.0, True, x,
                                              d.mins, True)
        q = self.qkv
        r = torch.ops.edgekit.qkv_rope_q4(y, q.packed, q.scales, q.rowsum, q.bias, GROUP, self.norm, 1e-6, cos, sin,
                                          HQ, HKV, D, None, None, q.mins, True)
        return a, y, r


def _reference(model, x, cos, sin, act_per_group=True):
    from edgekit_executorch.kernels.linear_q4 import reference_fused_linear_q4, reference_qkv_rope_q4

    m, d, q = model.lin, model.down, model.qkv
    a = q4.reference_linear_q4(x, m.packed, m.scales, m.rowsum, m.bias, GROUP, N, act_per_group, mins=m.mins)
    gu = torch.cat([x, x * 0.5], dim=-1)
    y = reference_fused_linear_q4(gu, d.packed, d.scales, d.rowsum, None, GROUP, K, None, 0.0, True, x, d.mins,
                                  act_per_group)
    r = reference_qkv_rope_q4(y, q.packed, q.scales, q.rowsum, None, GROUP, model.norm, 1e-6, cos, sin, HQ, HKV, D,
                              None, None, q.mins, act_per_group)
    return a, y, r


@pytest.fixture(scope="module")
def pte(tmp_path_factory, kernel_lib):
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge

    torch.manual_seed(0)
    model = ThreeOps().eval()
    t = torch.export.Dim("t", min=1, max=32)
    ex = (torch.randn(1, 5, K), torch.randn(1, 5, D), torch.randn(1, 5, D))
    with torch.no_grad():
        ep = torch.export.export(model, ex, dynamic_shapes=({1: t}, {1: t}, {1: t}), strict=False)
        prog = to_edge(ep.run_decompositions({}), compile_config=EdgeCompileConfig(_check_ir_validity=False))
        et = prog.to_executorch(ExecutorchBackendConfig())
    path = tmp_path_factory.mktemp("pte-apg") / "apg.pte"
    path.write_bytes(et.buffer)
    return path, model


def _close(got, want) -> float:
    err = float(np.abs(np.asarray(got) - np.asarray(want)).max())
    assert err <= REL_TOL * max(1.0, float(np.abs(np.asarray(want)).max())), err
    return err


@pytest.mark.parametrize("tokens", [1, 19], ids=["decode", "prefill"])
def test_act_per_group_ops_run_in_executorch(pte, tokens):
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    path, model = pte
    g = torch.Generator().manual_seed(tokens)
    x = torch.randn(1, tokens, K, generator=g) * 3
    x[..., :GROUP] *= 20      # one loud group: per token and per group rounding then differ clearly
    ang = torch.randn(1, tokens, D, generator=g)
    cos, sin = ang.cos(), ang.sin()
    got = _load_for_executorch(str(path)).forward((x, cos, sin))
    want = _reference(model, x, cos, sin)
    per_token = _reference(model, x, cos, sin, act_per_group=False)
    for g_, w, pt, name in zip(got, want, per_token, ("linear_q4", "fused_linear_q4", "qkv_rope_q4"), strict=True):
        assert torch.allclose(w, pt) is False, name          # the flag changes the arithmetic
        _close(g_.numpy(), w.numpy())


def test_without_the_flag_the_ops_keep_their_arity(kernel_lib):
    from edgekit_executorch.kernels.linear_q4 import Q4Linear

    codes, scales, mins = _grid(N, K, 3)
    plain = Q4Linear(codes.to(torch.int8) - 8, scales, GROUP, None)
    with_mins = Q4Linear(codes, scales, GROUP, None, mins=mins)
    grouped = Q4Linear(codes.to(torch.int8) - 8, scales, GROUP, None, act_per_group=True)
    arity = {}
    for name, mod in (("plain", plain), ("mins", with_mins), ("grouped", grouped)):
        ep = torch.export.export(mod, (torch.randn(1, 3, K),), strict=False)
        node = next(n for n in ep.graph.nodes if n.target == torch.ops.edgekit.linear_q4.default)
        arity[name] = len(node.args)
    assert arity == {"plain": 7, "mins": 8, "grouped": 9}
