"""A quantized checkpoint's own grids (a GGUF's blocks) carried into ONNX Runtime's stock ops, weight for weight.

Re-quantizing a GGUF's weights onto another grid costs quality no later step wins back, so quant 'source' writes the
file's integer codes and scales as they are. MatMulNBits (4 or 8 bits, one scale per block, uint8 zero points) holds
every symmetric grid exactly: a narrower code widens losslessly (Q5_0's 0..31 in 8 bits with zero point 16, Q2_K's 0..3
in 4 bits with zero point 2). An asymmetric grid (Q4_1, Q4_K: w = s * q + m) has a zero point -m/s that is rarely an
integer; MatMulNBits takes float zero points too, but its CPU kernel then runs 40-60x slower (2.3 ms instead of 44 us
for a 576 -> 1536 decode step here, and not at all at 8 bits). So the minimum is carried as a correction instead:

    w = s * (q - z) + c,  c = m + z * s per group  =>  x @ w.T = MatMulNBits(x) + groupsum(x) @ c.T

the second term a [.., K / group] x [K / group, N] MatMul on the per-group sums of x (one ReduceSum), small beside the
weights. Each product is one float32 rounding away from the file's own, which is what "exact" can mean in float32.

With linear_kernel 'edgekit' the 4-bit grids run in LinearQ4 (kernel_form: the minimums as they are, no correction)
and the symmetric 8-bit ones (Q8_0) in LinearQ8 / GatherQ8 with fp16 scales: a GGUF's d exactly, so the artifact
stores the file's codes, scales and minimums in as many bytes as the file does (builder.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edgekit.errors import UnsupportedOption
from edgekit.quant.tensor import QuantizedTensor

CARRIER_BITS = (4, 8)   # what MatMulNBits' CPU kernels run


@dataclass(frozen=True)
class Grid:
    """One (possibly fused) linear [N, K] in MatMulNBits form: w = scales * (codes - zero) + correction per group."""

    bits: int                          # 4 or 8
    group: int                         # MatMulNBits' block_size
    codes: np.ndarray                  # uint8 [N, K], 0 .. 2**bits - 1
    scales: np.ndarray                 # float32 [N, K / group]
    zero: np.ndarray                   # uint8 [N, K / group]: each group's zero point
    correction: np.ndarray | None      # float32 [N, K / group], or None when every part is symmetric
    sources: tuple[str, ...]
    offset: np.ndarray | None = None   # float32 [N, K / group]: w = scales * codes + offset (4-bit carriers only),
                                       # the file's own minimums, -8 * scale for symmetric parts (exact: a power of 2)
    width: int | None = None           # the linear's K when the codes are zero-padded to whole groups (None: K)

    @property
    def in_features(self) -> int:
        return self.width or self.codes.shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        return self.codes.shape  # type: ignore[return-value]

    @property
    def default_zero(self) -> bool:
        """Every zero point is MatMulNBits' default (2**(bits-1)): the graph can leave the input out."""
        return bool((self.zero == 1 << (self.bits - 1)).all())

    def packed(self) -> np.ndarray:
        """MatMulNBits' B: uint8 [N, K / group, group * bits / 8], 4-bit codes two per byte, the lower one first."""
        n, k = self.codes.shape
        c = self.codes if self.bits == 8 else self.codes[:, 0::2] | (self.codes[:, 1::2] << 4)
        return np.ascontiguousarray(c.reshape(n, k // self.group, -1))

    def packed_zero_points(self) -> np.ndarray:
        """MatMulNBits' zero_points: uint8 [N, K / group] at 8 bits; at 4 bits two per byte, [N, ceil(K/group / 2)]."""
        if self.bits == 8:
            return np.ascontiguousarray(self.zero)
        z = self.zero if self.zero.shape[1] % 2 == 0 else np.pad(self.zero, ((0, 0), (0, 1)))
        return np.ascontiguousarray(z[:, 0::2] | (z[:, 1::2] << 4))

    def main_weight(self) -> torch.Tensor:
        """float32 [N, K]: what MatMulNBits computes with (the correction term aside)."""
        n, k = self.codes.shape
        q = self.codes.reshape(n, k // self.group, self.group).astype(np.float32) - self.zero[..., None]
        return torch.from_numpy((q * self.scales[..., None]).reshape(n, k))

    def kernel_form(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None:
        """(codes, scales, mins) for edgekit's LinearQ4 (q4.pack's convention: signed codes without mins, unsigned
        0..15 with them), or None when this grid is not 4-bit. fp16 holds a GGUF's d and m exactly; K-quants'
        products d * sc are rounded to fp16 (relative 2^-11), which `exact_in_fp16` reports."""
        if self.bits != 4:
            return None
        codes = torch.from_numpy(self.codes)
        scales = torch.from_numpy(self.scales)
        if self.symmetric_kernel:
            return codes.to(torch.int8) - 8, scales, None
        return codes, scales, torch.from_numpy(self.offset)

    @property
    def symmetric_kernel(self) -> bool:
        """Every group is w = s * (q - 8): LinearQ4 needs no minimums."""
        return self.correction is None and self.default_zero

    def kernel_weight(self) -> torch.Tensor:
        """float32 [N, K]: what LinearQ4 computes with (scales and minimums stored as fp16)."""
        codes, scales, mins = self.kernel_form()
        n, k = codes.shape
        q = codes.to(torch.float32).view(n, k // self.group, self.group)
        w = q * scales.half().float().unsqueeze(-1)
        if mins is not None:
            w = w + mins.half().float().unsqueeze(-1)
        return w.reshape(n, k)

    def exact_in_fp16(self) -> bool:
        form = [self.scales] + ([] if self.symmetric_kernel else [self.offset])
        return all(np.array_equal(a.astype(np.float16).astype(np.float32), a) for a in form)

    def dequantize(self) -> torch.Tensor:
        w = self.main_weight()
        if self.correction is not None:
            w += torch.from_numpy(np.repeat(self.correction, self.group, axis=1))
        return w


def _check(t: QuantizedTensor, name: str) -> None:
    if t.bits > max(CARRIER_BITS) or t.group_size < 16 or t.group_size & (t.group_size - 1):
        raise UnsupportedOption(f"{name} ({t.source}: {t.bits}-bit codes in groups of {t.group_size}) does not fit "
                                "MatMulNBits (at most 8 bits, groups of a power of two >= 16); export it with quant "
                                "'int4' or 'fp32' instead")


def to_grid(parts: list[QuantizedTensor], names: list[str], width: int | None = None) -> Grid:
    """The parts (row blocks of one fused linear, e.g. q|k|v) on one MatMulNBits grid, each exactly as stored.
    `width`: the linear's K when the parts' codes are zero-padded up to whole groups (edgekit.quant.gptq pads so)."""
    for t, name in zip(parts, names, strict=True):
        _check(t, name)
    if len({t.shape[1] for t in parts}) != 1:
        raise ValueError(f"{names}: fused parts must share the input width")
    bits = next(b for b in CARRIER_BITS if b >= max(t.bits for t in parts))
    group = min(t.group_size for t in parts)
    z_default = 1 << (bits - 1)
    codes, scales, zero, corr, offset = [], [], [], [], []
    for t in parts:
        rep = t.group_size // group
        s = t.scales.numpy().astype(np.float32, copy=False).repeat(rep, axis=1)
        c = t.codes.numpy()
        if t.mins is None:   # w = s * (q - 2**(b-1)): the same zero point, wider code
            z = np.full(s.shape, 1 << (t.bits - 1), dtype=np.uint8)
            cor = np.zeros(s.shape, dtype=np.float32)
            offset.append(np.float32(-(1 << (t.bits - 1))) * s if bits == 4 else None)
        else:                # w = s * q + m = s * (q - z) + (m + z * s)
            z = np.full(s.shape, z_default, dtype=np.uint8)
            mins = t.mins.numpy().astype(np.float32).repeat(rep, axis=1)
            cor = mins + np.float32(z_default) * s
            offset.append(mins)
        codes.append(c)
        scales.append(s)
        zero.append(z)
        corr.append(cor)
    correction = np.concatenate(corr) if any(t.mins is not None for t in parts) else None
    return Grid(bits, group, np.concatenate(codes), np.concatenate(scales), np.concatenate(zero), correction,
                tuple(sorted({t.source for t in parts})), np.concatenate(offset) if bits == 4 else None,
                None if width == parts[0].shape[1] else width)


def fused_parts(cfg) -> dict[str, list[str]]:
    """Each graph linear (builder.linear_table's names) and the canonical weights it fuses, in row order; plus the
    embedding table."""
    out: dict[str, list[str]] = {}
    for i in range(cfg.num_layers):
        a, f = f"layers.{i}.attention.", f"layers.{i}.feed_forward."
        out[f"/model/layers.{i}/attn/qkv_proj"] = [a + "wq.weight", a + "wk.weight", a + "wv.weight"]
        out[f"/model/layers.{i}/attn/o_proj"] = [a + "wo.weight"]
        out[f"/model/layers.{i}/mlp/gate_up_proj"] = [f + "w1.weight", f + "w3.weight"]
        out[f"/model/layers.{i}/mlp/down_proj"] = [f + "w2.weight"]
    out["/lm_head"] = ["tok_embeddings.weight" if cfg.tie_word_embeddings else "output.weight"]
    if not cfg.tie_word_embeddings:
        out["/model/embed_tokens"] = ["tok_embeddings.weight"]
    return out


def grids_for(cfg, source: dict[str, QuantizedTensor]) -> tuple[dict[str, Grid], list[str]]:
    """The grids of every graph linear whose parts all come quantized from the checkpoint, and the names of the
    canonical weights left in float (stored as floats in the file: F32 / F16 tensors, e.g. small norms or a float
    output layer)."""
    grids, floats = {}, []
    for name, parts in fused_parts(cfg).items():
        if all(p in source for p in parts):
            grids[name] = to_grid([source[p] for p in parts], parts)
        else:
            floats += [p for p in parts if p not in source]
    return grids, floats
