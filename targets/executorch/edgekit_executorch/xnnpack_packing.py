"""XNNPACK's int4 weight packing, row block by row block (peak RSS).

NodeVisitor.convert_to_qc4w packs a whole [oc, ic] int8 matrix of int4 values at once through three full-size
temporaries (uint8 copy, +8, shifted half). For a 151936 x 896 output layer that is ~0.4 GB on top of everything the
lowering holds, and it is the 0.5B export's RSS peak. lean_convert_to_qc4w produces the same bytes 8192 rows at a time
(pairs never cross rows: ic is even after padding), so its temporaries are a few MB.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

ROWS = 8192


def lean_convert_to_qc4w(inp: torch.Tensor) -> torch.Tensor:
    """Byte-identical to executorch's NodeVisitor.convert_to_qc4w (tests/executorch/test_lowering_tweaks.py)."""
    import torch.nn.functional as F

    lo, hi = inp.min().item(), inp.max().item()
    assert hi <= 7 and lo >= -8, f"convert_to_qc4w: [min,max] out of [-8, 7] range, got [{lo}, {hi}]"
    if inp.ndim != 2:
        inp = inp.squeeze()
    assert inp.ndim == 2, f"convert_to_qc4w: expecting input tensor to be 2d, got {inp.ndim}"
    if inp.shape[-1] % 2 != 0:
        inp = F.pad(input=inp, pad=(0, 1, 0, 0), mode="constant", value=0)
    oc, ic = inp.shape
    out = torch.empty(oc, ic // 2, dtype=torch.uint8)
    for r in range(0, oc, ROWS):
        flat = (inp[r:r + ROWS].to(dtype=torch.uint8) + 8).contiguous().view(-1)
        out[r:r + ROWS] = (flat[1::2] << 4 | flat[::2]).view(-1, ic // 2)
    return out


@contextlib.contextmanager
def lean_int4_packing() -> Iterator[None]:
    """Within the block, XNNPACK's node visitors pack int4 weights with lean_convert_to_qc4w."""
    from executorch.backends.xnnpack.operators.node_visitor import NodeVisitor

    original = NodeVisitor.__dict__["convert_to_qc4w"]
    NodeVisitor.convert_to_qc4w = staticmethod(lean_convert_to_qc4w)
    try:
        yield
    finally:
        NodeVisitor.convert_to_qc4w = original
