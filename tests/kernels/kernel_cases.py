"""Random int8-cache attention cases for the kernel tests: caches filled through the reference update op."""
from __future__ import annotations

import struct
from pathlib import Path

import torch

from edgekit.kernels import quantize_rows, reference_attention

ATOL = 1e-4  # max abs error vs the fp32 reference (outputs are averages of dequantized V ~ N(0, 1); seen: ~1e-5)


def make_case(hq: int, hkv: int, d: int, ctx: int, t: int, seed: int = 0, s: int | None = None) -> dict:
    """Caches [1, S, Hkv, D] filled at 0..ctx-1; the query chunk is the last t positions (ctx-t .. ctx-1)."""
    g = torch.Generator().manual_seed(seed)
    s = s if s is not None else ctx + 3  # a few unwritten slots past the context: the kernel must not read them
    k_cache = torch.full((1, s, hkv, d), 99, dtype=torch.int8)
    v_cache = torch.full((1, s, hkv, d), -99, dtype=torch.int8)
    k_scale = torch.full((1, s, hkv), 7.0)
    v_scale = torch.full((1, s, hkv), 7.0)
    kq, ks = quantize_rows(torch.randn(1, ctx, hkv, d, generator=g) * 2)
    vq, vs = quantize_rows(torch.randn(1, ctx, hkv, d, generator=g))
    k_cache[:, :ctx], v_cache[:, :ctx], k_scale[:, :ctx], v_scale[:, :ctx] = kq, vq, ks, vs
    q = torch.randn(1, t, hq, d, generator=g)
    pos = torch.arange(ctx - t, ctx)
    return {"q": q, "k": k_cache, "v": v_cache, "ks": k_scale, "vs": v_scale, "pos": pos,
            "ref": reference_attention(q, k_cache, v_cache, k_scale, v_scale, pos),
            "value": torch.randn(1, t, hkv, d, generator=g) * 3}


def write_cases(path: Path, cases: list[dict], splits: list[int], tol: float = ATOL) -> None:
    """The binary format kernel_check_main.cpp reads (see its header comment)."""
    with path.open("wb") as f:
        f.write(b"EKC1" + struct.pack("<q", len(cases)))
        for c, sp in zip(cases, splits):
            _, t, hq, d = c["q"].shape
            s, hkv = c["k"].shape[1], c["k"].shape[2]
            f.write(struct.pack("<6q", t, hq, hkv, d, s, sp) + struct.pack("<f", tol))
            qv, qs = quantize_rows(c["value"])
            for x in (c["q"], c["k"], c["v"], c["ks"], c["vs"], c["pos"], c["ref"], c["value"], qv, qs):
                f.write(x.contiguous().numpy().tobytes())
