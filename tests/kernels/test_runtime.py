"""The kernels inside the ExecuTorch runtime: a small exported program calling both ops, loaded through the
pybindings after load_kernel_library(), run for a prefill then decode steps (the cache persists in place)."""
from __future__ import annotations

import pytest
import torch
from kernel_cases import ATOL

from edgekit.kernels import Int8CachedAttention

HQ, HKV, D, S = 14, 2, 64, 160


class OneAttention(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attend = Int8CachedAttention(HQ, HKV, D, S)

    def forward(self, q, k, v, input_pos):
        return self.attend(q, k, v, input_pos, None)


@pytest.fixture(scope="module")
def pte_path(tmp_path_factory, kernel_lib):
    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge

    t = torch.export.Dim("t", min=1, max=S - 1)
    ex = (torch.randn(1, 3, HQ, D), torch.randn(1, 3, HKV, D), torch.randn(1, 3, HKV, D), torch.arange(3))
    with torch.no_grad():
        ep = torch.export.export(OneAttention(), ex, dynamic_shapes=({1: t}, {1: t}, {1: t}, {0: t}), strict=False)
        prog = to_edge(ep.run_decompositions({}), compile_config=EdgeCompileConfig(_check_ir_validity=False))
        et = prog.to_executorch(ExecutorchBackendConfig())
    ops = {str(n.target) for n in et.exported_program().graph.nodes if n.op == "call_function"}
    assert {"edgekit.attention.out", "edgekit.update_int8_cache.out"} <= ops, ops
    path = tmp_path_factory.mktemp("pte") / "attention.pte"
    path.write_bytes(et.buffer)
    return path


def test_runtime_runs_our_kernels_prefill_then_decode(pte_path):
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    module = _load_for_executorch(str(pte_path))
    eager = OneAttention()
    g = torch.Generator().manual_seed(3)
    for start, t in ((0, 100), (100, 1), (101, 1), (102, 30)):
        q, k, v = (torch.randn(1, t, h, D, generator=g) for h in (HQ, HKV, HKV))
        pos = torch.arange(start, start + t)
        got = module.forward((q, k, v, pos))[0]
        want = eager(q, k, v, pos)
        assert got.shape == want.shape
        assert (got - want).abs().max() <= ATOL, f"step at {start} (T={t})"
