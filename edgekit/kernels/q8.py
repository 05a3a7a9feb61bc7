"""The int8 table shared by a tied embedding and its output layer (GGUF's Q8_0 grid): its packed layout and the
PyTorch definition of what edgekit's kernel computes with it (csrc/linear_q8_tiles.h).

Meaning: codes int8 [N, K] (-128..127) with one scale per group of G inputs, w = s * code. The head quantizes each
group of G activations of a token on its own, symmetric (scale max|x| / 127, round half to even: the int4 kernel's
`act_per_group`), y = x_fq @ w.T: llama.cpp's Q8_0 x Q8_0 product. The lookup returns rows of w exactly.

Layout ("tiled16", 8-bit): rows in tiles of 16 (N padded with zero rows); int8 packed [N_pad * K] in the order
[tile][group][G / 4 vectors][16 rows][4 codes]; scales [N_pad * K / G] in the int4 layout's order
([tile][group][16 rows]), fp16 (a GGUF's d as stored) or bf16.
"""
from __future__ import annotations

import torch

from edgekit.kernels.q4 import SCALE_DTYPES, TILE, _tile_groups, _untile_groups, fake_quantize_groups, padded_rows


def pack_q8(codes: torch.Tensor, scales: torch.Tensor, group: int,
            scale_dtype: torch.dtype = torch.float16) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 codes [N, K] and scales [N, K / group] -> (packed int8 [N_pad * K], tiled scales [N_pad * K / group])."""
    n, k = codes.shape
    if group % 8 or group > 256 or k % group or scales.shape != (n, k // group):
        raise ValueError(f"codes {tuple(codes.shape)} / scales {tuple(scales.shape)} do not fit group {group} "
                         "(a multiple of 8 up to 256 dividing K)")
    if scale_dtype not in SCALE_DTYPES:
        raise ValueError(f"scale_dtype {scale_dtype} is not one of {SCALE_DTYPES}")
    if codes.dtype != torch.int8:
        raise ValueError(f"int8 codes expected, got {codes.dtype}")
    npad, kb = padded_rows(n), k // group
    full = torch.zeros(npad, k, dtype=torch.int8)
    full[:n] = codes
    packed = full.view(npad // TILE, TILE, k // 4, 4).transpose(1, 2).reshape(-1).clone()
    s16 = torch.zeros(npad, kb, dtype=scale_dtype)
    s16[:n] = scales.to(scale_dtype)
    return packed, _tile_groups(s16, npad, kb)


def unpack_q8(packed: torch.Tensor, scales: torch.Tensor, group: int, n: int, k: int) -> torch.Tensor:
    """The fp32 weight [N, K] a packed table holds."""
    npad, kb = padded_rows(n), k // group
    codes = packed.view(npad // TILE, k // 4, TILE, 4).transpose(1, 2).reshape(npad, k).to(torch.float32)
    w = codes.view(npad, kb, group) * _untile_groups(scales, npad, kb).unsqueeze(-1)
    return w.view(npad, k)[:n]


def reference_linear_q8(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, group: int, n: int,
                        norm_weight: torch.Tensor | None = None, norm_eps: float = 0.0) -> torch.Tensor:
    """edgekit::linear_q8: optional RMSNorm (edgekit.model.graph's arithmetic), per-group int8 activations, x @ w.T."""
    x = x.to(torch.float32)
    if norm_weight is not None:
        x = norm_weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm_eps))
    w = unpack_q8(packed, scales, group, n, x.shape[-1])
    return fake_quantize_groups(x, group) @ w.T


def reference_embedding_q8(packed: torch.Tensor, scales: torch.Tensor, indices: torch.Tensor, n: int, k: int,
                           group: int) -> torch.Tensor:
    """edgekit::embedding_q8: rows `indices` of the table, dequantized."""
    return unpack_q8(packed, scales, group, n, k)[indices]
