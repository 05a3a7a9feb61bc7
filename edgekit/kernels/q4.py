"""The int4 linear shared by edgekit's compiled kernels (ExecuTorch `edgekit::linear_q4`, ONNX Runtime
`edgekit.LinearQ4`): its packed weight layout and the PyTorch definition of what it computes.

Meaning: the weight is int4 codes [N, K] with one scale per group of G inputs, either symmetric (codes -8..7,
w = s * code) or asymmetric with a per-group minimum (codes 0..15, w = s * code + m: GGUF's Q4_1 grid, and the
per-group form of Q4_K); scales and minimums are stored as bf16 or fp16 (fp16 holds a GGUF file's d and m exactly).
The activations x [..., K] fp32 are quantized to int8 and dequantized in one of two ways, then y = x_fq @ w.T (+ bias):
- per token, asymmetric (torchao's int8_asym_per_token): torchao's 8da4w linear, what the ExecuTorch target runs;
- per group of G inputs, symmetric, scale max|x| / 127 (`act_per_group`): MatMulNBits' accuracy level 4, what the
  ONNX Runtime op runs, so an ONNX export keeps MatMulNBits' accuracy with edgekit's kernel.

Layout ("tiled16", what csrc/linear_q4.h reads): rows in tiles of 16 (N padded with zero rows to a multiple of 16);
uint8 packed [N_pad * K / 2] (nibble = code + 8 when symmetric, the code itself with minimums), scales [N_pad * K / G]
(bf16 or fp16), minimums (when present) in the scales' layout and dtype, fp32 rowsum [N_pad] (sum_k w: the
activation zero-point term). The C++ core is csrc/linear_q4.h; each target compiles it against its own runtime's
headers.
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


SCALE_DTYPES = (torch.bfloat16, torch.float16)


def _check_pack_args(codes, scales, group, mins, scale_dtype) -> None:
    n, k = codes.shape
    if k % group or group % 8 or scales.shape != (n, k // group):
        raise ValueError(f"codes {tuple(codes.shape)} / scales {tuple(scales.shape)} do not fit group {group}")
    if scale_dtype not in SCALE_DTYPES:
        raise ValueError(f"scale_dtype {scale_dtype} is not one of {SCALE_DTYPES}")
    if mins is None:
        if codes.min() < -8 or codes.max() > 7:
            raise ValueError("int4 codes must lie in -8..7 (without minimums)")
        return
    if mins.shape != scales.shape:
        raise ValueError(f"mins {tuple(mins.shape)} must have the scales' shape {tuple(scales.shape)}")
    if codes.min() < 0 or codes.max() > 15:
        raise ValueError("int4 codes with minimums must lie in 0..15")


def _tile_groups(v: torch.Tensor, rows: int, kb: int) -> torch.Tensor:
    """[rows, K/G] per-group values -> the tiled order [rows/16, K/G, 16], flattened."""
    return v.view(rows // TILE, TILE, kb).transpose(1, 2).reshape(-1)


def pack(codes: torch.Tensor, scales: torch.Tensor, group: int, mins: torch.Tensor | None = None,
         scale_dtype: torch.dtype = torch.bfloat16) -> tuple[torch.Tensor, ...]:
    """int4 codes [N, K] and scales [N, K / group] -> (packed uint8, scales, rowsum fp32) in the kernel's tiled
    layout, plus the tiled minimums as a fourth element when `mins` [N, K / group] is given.

    Without mins the codes are signed (int8 in -8..7, w = scales * codes); with mins they are unsigned (0..15, uint8
    or any integer dtype, w = scales * codes + mins), edgekit.quant's QuantizedTensor convention. Scales and mins are
    rounded to `scale_dtype` (bf16 or fp16; values already in that dtype are kept exactly). Rows are padded to a
    multiple of 16 with zero scales (and zero mins)."""
    _check_pack_args(codes, scales, group, mins, scale_dtype)
    n, k = codes.shape
    kb, npad = k // group, padded_rows(n)
    offset = 8 if mins is None else 0   # the stored nibble
    packed = torch.empty(npad * k // 2, dtype=torch.uint8)
    tiled_scales = torch.empty(npad * kb, dtype=scale_dtype)
    tiled_mins = None if mins is None else torch.empty(npad * kb, dtype=scale_dtype)
    rowsum = torch.zeros(npad, dtype=torch.float32)
    for r0 in range(0, npad, PACK_ROWS):
        r1 = min(npad, r0 + PACK_ROWS)
        rows, real = r1 - r0, max(0, min(n, r1) - r0)
        s16 = torch.zeros(rows, kb, dtype=scale_dtype)
        s16[:real] = scales[r0:r0 + real].to(scale_dtype)
        nib = torch.full((rows, k), offset, dtype=torch.uint8)
        nib[:real] = codes[r0:r0 + real].to(torch.int16).add(offset).to(torch.uint8)
        # [tiles, 16 rows, K/8 vectors, 2 halves, 4 bytes] -> [tiles, K/8 vectors, 16 rows, 4 bytes] per half
        v = nib.view(rows // TILE, TILE, k // 8, 2, 4).permute(0, 2, 1, 3, 4)
        packed[r0 * k // 2:r1 * k // 2] = (v[..., 0, :] | (v[..., 1, :] << 4)).reshape(-1)
        tiled_scales[r0 * kb:r1 * kb] = _tile_groups(s16, rows, kb)
        m16 = None
        if mins is not None:
            m16 = torch.zeros(rows, kb, dtype=scale_dtype)
            m16[:real] = mins[r0:r0 + real].to(scale_dtype)
            tiled_mins[r0 * kb:r1 * kb] = _tile_groups(m16, rows, kb)
        if real:
            q = codes[r0:r0 + real].to(torch.float32).view(real, kb, group)
            deq = q * s16[:real].to(torch.float32).unsqueeze(-1)
            if m16 is not None:
                deq = deq + m16[:real].to(torch.float32).unsqueeze(-1)
            rowsum[r0:r0 + real] = deq.sum(dim=(1, 2))
    return (packed, tiled_scales, rowsum) if mins is None else (packed, tiled_scales, rowsum, tiled_mins)


def _untile_groups(v: torch.Tensor, npad: int, kb: int) -> torch.Tensor:
    return v.view(npad // TILE, kb, TILE).transpose(1, 2).reshape(npad, kb).to(torch.float32)


def unpack(packed: torch.Tensor, scales: torch.Tensor, group: int, n: int, k: int,
           mins: torch.Tensor | None = None) -> torch.Tensor:
    """The fp32 weight [N, K] that a packed weight holds: codes times scales, plus the minimums when given."""
    npad, kb = padded_rows(n), k // group
    v = packed.view(npad // TILE, k // 8, TILE, 4)
    nib = torch.stack((v & 0x0F, v >> 4), dim=3)              # [tiles, K/8, 16, 2, 4]
    codes = nib.permute(0, 2, 1, 3, 4).reshape(npad, k).to(torch.int16) - (8 if mins is None else 0)
    w = codes.to(torch.float32).view(npad, kb, group) * _untile_groups(scales, npad, kb).unsqueeze(-1)
    if mins is not None:
        w = w + _untile_groups(mins, npad, kb).unsqueeze(-1)
    return w.view(npad, k)[:n]


def lossless_scale_dtype(scales: torch.Tensor, mins: torch.Tensor | None = None) -> torch.dtype | None:
    """fp16 or bf16 when every scale (and min) survives it exactly (fp16 first: a GGUF's d and m are fp16), else None
    (e.g. Q4_K's d * sc products, which need more mantissa bits than either)."""
    for dtype in (torch.float16, torch.bfloat16):
        if all(t is None or torch.equal(t.to(dtype).to(t.dtype), t) for t in (scales, mins)):
            return dtype
    return None


def pack_quantized(t, scale_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, ...]:
    """pack() of a 4-bit quantized tensor in edgekit.quant's QuantizedTensor convention (`codes` uint8 0..15,
    `scales`, `mins` or None, `bits`, `group_size`; symmetric w = scales * (codes - 8), else scales * codes + mins).
    scale_dtype None: the lossless one (lossless_scale_dtype), else fp16, which rounds least."""
    if t.bits != 4:
        raise ValueError(f"the int4 kernel packs 4-bit tensors, got {t.bits} bits")
    if scale_dtype is None:
        scale_dtype = lossless_scale_dtype(t.scales, t.mins) or torch.float16
    if t.mins is None:
        return pack(t.codes.to(torch.int16).sub(8).to(torch.int8), t.scales, t.group_size, scale_dtype=scale_dtype)
    return pack(t.codes, t.scales, t.group_size, mins=t.mins, scale_dtype=scale_dtype)


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
                        act_per_group: bool = False, mins: torch.Tensor | None = None) -> torch.Tensor:
    """What the kernel computes: the fake-quantized activations times the packed weight (with its minimums)."""
    w = unpack(packed, scales, group_size, out_features, x.shape[-1], mins)
    xq = fake_quantize_groups(x, group_size) if act_per_group else fake_quantize_activations(x)
    return nn.functional.linear(xq, w, bias)
