"""The lowering speed/memory tweaks change nothing in the lowered program: int4 packing is byte-identical to
XNNPACK's own, pass filtering keeps every pass whose ops occur, and the torchao fake rules give the real ops' shapes."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("executorch")


@pytest.mark.parametrize("shape", [(5, 8), (9000, 6), (3, 7), (8193, 33), (1, 64, 16)])
def test_lean_int4_packing_is_byte_identical(shape):
    from edgekit_executorch.xnnpack_packing import lean_convert_to_qc4w
    from executorch.backends.xnnpack.operators.node_visitor import NodeVisitor

    torch.manual_seed(0)
    w = torch.randint(-8, 8, shape, dtype=torch.int8)
    assert torch.equal(lean_convert_to_qc4w(w), NodeVisitor.convert_to_qc4w(w))


def test_lean_int4_packing_rejects_out_of_range():
    from edgekit_executorch.xnnpack_packing import lean_convert_to_qc4w

    with pytest.raises(AssertionError, match="out of"):
        lean_convert_to_qc4w(torch.tensor([[8, 0]], dtype=torch.int8))


def test_lean_packing_is_installed_only_inside_the_block():
    from edgekit_executorch.xnnpack_packing import lean_convert_to_qc4w, lean_int4_packing
    from executorch.backends.xnnpack.operators.node_visitor import NodeVisitor

    original = NodeVisitor.convert_to_qc4w
    with lean_int4_packing():
        assert NodeVisitor.convert_to_qc4w is lean_convert_to_qc4w
    assert NodeVisitor.convert_to_qc4w is original


def test_pass_filter_keeps_passes_whose_ops_occur():
    from edgekit_executorch.xnnpack_passes import needed_passes
    from executorch.backends.xnnpack._passes import (
        ConvertToLinearPass,
        ConvertToSDPAPass,
        DecomposeBatchNorm,
        DecomposeConcatenate,
        FuseBatchNormPass,
    )

    class M(torch.nn.Module):
        def forward(self, x):
            return torch.cat([torch.softmax(x, -1), x], -1)

    from executorch.exir import to_edge

    gm = to_edge(torch.export.export(M(), (torch.randn(2, 4),))).exported_program().graph_module
    kept = needed_passes([ConvertToLinearPass, ConvertToSDPAPass, DecomposeBatchNorm, DecomposeConcatenate,
                          FuseBatchNormPass], gm)
    assert kept == [ConvertToLinearPass, ConvertToSDPAPass, DecomposeConcatenate]   # no batch norm in this graph


def test_torchao_fake_rules_match_the_real_ops():
    from edgekit_executorch.torchao_fakes import check

    check()   # raises AssertionError naming the mismatching case


@pytest.mark.parametrize("head_dim", [8, 64, 128])
def test_linear_rope_equals_the_slice_rope_exactly(head_dim):
    """The rotate_half-as-linear rope (what XNNPACK keeps) gives the graph's slice + cat rope bit for bit."""
    from edgekit_executorch.attention import LinearRope

    from edgekit.model.graph import Rope

    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 5, 3, head_dim, generator=g) * 10
    cos, sin = torch.randn(1, 5, 1, head_dim, generator=g), torch.randn(1, 5, 1, head_dim, generator=g)
    assert torch.equal(LinearRope(head_dim)(x, cos, sin), Rope()(x, cos, sin))


def test_the_start_position_is_read_by_the_first_layer_and_shared(tiny_model):
    """Every layer's custom_sdpa gets the position layer 0 read; decoding matches edgekit's own attention."""
    from edgekit_executorch.attention import CustomSdpaAttention, use_custom_sdpa

    model = tiny_model("qwen2")
    ref, dec = model.decoder(max_seq_len=32), model.decoder(max_seq_len=32)
    assert use_custom_sdpa(dec) == len(dec.layers)
    attends = [layer.attention.attend for layer in dec.layers]
    assert all(isinstance(a, CustomSdpaAttention) for a in attends)
    assert [a.reads_position for a in attends] == [True] + [False] * (len(attends) - 1)
    assert len({id(a.position) for a in attends}) == 1
    tokens = torch.tensor([[5, 9, 3, 7]])
    with torch.no_grad():
        torch.testing.assert_close(dec(tokens, torch.arange(4)), ref(tokens, torch.arange(4)), atol=1e-5, rtol=0)
        step = torch.tensor([[11]])
        torch.testing.assert_close(dec(step, torch.tensor([4])), ref(step, torch.tensor([4])), atol=1e-5, rtol=0)
    assert attends[0].position.value == 4
