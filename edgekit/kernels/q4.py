"""The int4 linear shared by edgekit's compiled kernels (ExecuTorch `edgekit::linear_q4`, ONNX Runtime
`edgekit.LinearQ4`): its packed weight layout and the PyTorch definition of what it computes.

Meaning: the weight is int4 codes [N, K] in -8..7 times one bf16 scale per group of G inputs; the activations x
[..., K] fp32 are quantized to int8 and dequantized in one of two ways, then y = x_fq @ w.T (+ bias):
- per token, asymmetric (torchao's int8_asym_per_token): torchao's 8da4w linear, what the ExecuTorch target runs;
- per group of G inputs, symmetric, scale max|x| / 127 (`act_per_group`): MatMulNBits' accuracy level 4, what the
  ONNX Runtime op runs, so an ONNX export keeps MatMulNBits' accuracy with edgekit's kernel.

Layout ("tiled16", what csrc/linear_q4.h reads): rows in tiles of 16 (N padded with zero rows to a multiple of 16);
uint8 packed [N_pad * K / 2], bf16 scales [N_pad * K / G], fp32 rowsum [N_pad] (sum_k code * scale: the zero-point
term). The C++ core is csrc/linear_q4.h; each target compiles it against its own runtime's headers.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

TILE = 16
PACK_ROWS = 4096  # rows packed per chunk: the fp32 / int16 temporaries of a 150k-row output layer stay ~30 MB
CSRC = Path(__file__).with_name("csrc")
HEADER = CSRC / "linear_q4.h"


def padded_rows(n: int) -> int:
    return (n + TILE - 1) // TILE * TILE


def pack(codes: torch.Tensor, scales: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """int4 codes [N, K] (int8 in -8..7) and scales [N, K / group] -> (packed uint8, scales bf16, rowsum fp32) in the
    kernel's tiled layout; rows are padded to a multiple of 16 with zero codes and zero scales."""
    n, k = codes.shape
    if k % group or group % 8 or scales.shape != (n, k // group):
        raise ValueError(f"codes {tuple(codes.shape)} / scales {tuple(scales.shape)} do not fit group {group}")
    if codes.min() < -8 or codes.max() > 7:
        raise ValueError("int4 codes must lie in -8..7")
    npad = padded_rows(n)
    packed = torch.empty(npad * k // 2, dtype=torch.uint8)
    tiled_scales = torch.empty(npad * (k // group), dtype=torch.bfloat16)
    rowsum = torch.zeros(npad, dtype=torch.float32)
    for r0 in range(0, npad, PACK_ROWS):
        r1 = min(npad, r0 + PACK_ROWS)
        rows, real = r1 - r0, max(0, min(n, r1) - r0)
        s16 = torch.zeros(rows, k // group, dtype=torch.bfloat16)
        s16[:real] = scales[r0:r0 + real].to(torch.bfloat16)
        nib = torch.full((rows, k), 8, dtype=torch.uint8)
        nib[:real] = codes[r0:r0 + real].add(8).to(torch.uint8)
        # [tiles, 16 rows, K/8 vectors, 2 halves, 4 bytes] -> [tiles, K/8 vectors, 16 rows, 4 bytes] per half
        v = nib.view(rows // TILE, TILE, k // 8, 2, 4).permute(0, 2, 1, 3, 4)
        packed[r0 * k // 2:r1 * k // 2] = (v[..., 0, :] | (v[..., 1, :] << 4)).reshape(-1)
        tiled_scales[r0 * (k // group):r1 * (k // group)] = s16.view(rows // TILE, TILE, k // group).transpose(1, 2) \
            .reshape(-1)
        if real:
            deq = codes[r0:r0 + real].to(torch.float32).view(real, k // group, group) * \
                s16[:real].to(torch.float32).unsqueeze(-1)
            rowsum[r0:r0 + real] = deq.sum(dim=(1, 2))
    return packed, tiled_scales, rowsum


def unpack(packed: torch.Tensor, scales: torch.Tensor, group: int, n: int, k: int) -> torch.Tensor:
    """The fp32 weight [N, K] (codes times scales) that a packed weight holds."""
    npad = padded_rows(n)
    v = packed.view(npad // TILE, k // 8, TILE, 4)
    nib = torch.stack((v & 0x0F, v >> 4), dim=3)              # [tiles, K/8, 16, 2, 4]
    codes = nib.permute(0, 2, 1, 3, 4).reshape(npad, k).to(torch.int16) - 8
    s = scales.view(npad // TILE, k // group, TILE).transpose(1, 2).reshape(npad, k // group).to(torch.float32)
    w = codes.to(torch.float32).view(npad, k // group, group) * s.unsqueeze(-1)
    return w.view(npad, k)[:n]


def fake_quantize_activations(x: torch.Tensor) -> torch.Tensor:
    """torchao's int8_asym_per_token quantize + dequantize of x [..., K] (fp32), the op's activation semantics."""
    x = x.to(torch.float32)
    lo = torch.clamp(x.amin(dim=-1, keepdim=True), max=0.0)
    hi = torch.clamp(x.amax(dim=-1, keepdim=True), min=0.0)
    scale = torch.clamp((hi - lo) / 255.0, min=torch.finfo(torch.float32).smallest_normal)
    zp = torch.clamp(-128 - torch.round(lo / scale), -128, 127)
    q = torch.clamp(torch.round(x * (1.0 / scale)) + zp, -128, 127)
    return (q - zp) * scale


def fake_quantize_groups(x: torch.Tensor, group: int) -> torch.Tensor:
    """Per-group symmetric int8 quantize + dequantize of x [..., K]: each group of `group` inputs gets scale
    max|x| / 127, q = clamp(round_half_even(x * (1 / scale)), -128, 127), 0 where the group is all zero; K is padded
    with zeros to whole groups (MatMulNBits does; the kernel needs K % group == 0)."""
    k = x.shape[-1]
    pad = -k % group
    xb = nn.functional.pad(x.to(torch.float32), (0, pad)).reshape(*x.shape[:-1], -1, group)
    scale = xb.abs().amax(-1, keepdim=True) / 127.0
    inv = torch.where(scale != 0, 1.0 / scale, torch.zeros_like(scale))
    return (torch.round(xb * inv).clamp(-128, 127) * scale).reshape(*x.shape[:-1], -1)[..., :k]


def reference_linear_q4(x, packed, scales, rowsum, bias, group_size: int, out_features: int,
                        act_per_group: bool = False) -> torch.Tensor:
    w = unpack(packed, scales, group_size, out_features, x.shape[-1])
    xq = fake_quantize_groups(x, group_size) if act_per_group else fake_quantize_activations(x)
    return nn.functional.linear(xq, w, bias)
