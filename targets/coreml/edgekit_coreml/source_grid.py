"""A quantized checkpoint's own grids (a GGUF's blocks) in Core ML's iOS 18 constexpr_blockwise_shift_scale, as stored.

Re-quantizing a GGUF's weights onto Core ML's own w4 grid costs quality no later step wins back, so quant 'source'
writes the file's codes and scales as they are. The op computes w = scale * (data - offset), data int4 / int8, scale
fp16 (the program's dtype). A symmetric grid (Q4_0, Q8_0, Q5_0, Q6_K: w = d * (q - 2**(b-1))) fits directly: data is
the file's code shifted to signed (q - 2**(b-1), widened losslessly to int4 or int8), scale the file's d.

An asymmetric grid (Q4_1, Q4_K: w = d * q + m) would need offset = -m / d, which is rarely an fp16 number: rounding it
moves each weight by up to d * 2**-8 (measured on SmolLM2's Q4_1 tensors: 68 % of the fp16 weights then differ from the
file's weight rounded to fp16, mean error 1.4e-3 d). So the minimum is carried as a per-group correction instead, as the
ONNX target does:

    w = d * (q - z) + c,  c = m + z * d per group  =>  x @ w.T = linear(x, d * (q - z)) + groupsum(x) @ c.T

with z = 2**(b-1). For a GGUF's Q4_1 c is exact in fp16 (m and z * d are fp16 and -m lies within a factor 2 of z * d,
so the subtraction is exact): every stored number is the file's own, and the only rounding left is fp16's on
d * (q - z) (at most half an fp16 ulp of 8 d, 2**-8 d) and on the activations, which an fp16 program has anyway. The
correction costs one reduce_sum over each group of x and a [K / group] -> N linear per layer, 1 / group of the
weights' work.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from edgekit.errors import UnsupportedOption
from edgekit.quant.tensor import QuantizedTensor

CARRIER_BITS = (4, 8)   # constexpr_blockwise_shift_scale's integer data types (int4, int8)


@dataclass(frozen=True)
class SourceGrid:
    """One [N, K] weight in constexpr form: w = scale * data + correction (per group along K)."""

    bits: int                        # 4 or 8: the int{bits} data type carrying the codes
    group: int                       # the file's group size along K
    data: np.ndarray                 # int8 [N, K]: the file's codes minus 2**(b-1)
    scale: np.ndarray                # float16 [N, K / group]: the file's d
    correction: np.ndarray | None    # float16 [N, K / group]: m + 2**(b-1) * d, None for a symmetric grid
    source: str                      # e.g. "gguf:Q4_1"
    rounded: bool                    # some scale / correction was not an fp16 number (K-quants' d * sc products)

    @property
    def shape(self) -> tuple[int, int]:
        return self.data.shape  # type: ignore[return-value]

    def main_weight(self) -> np.ndarray:
        """float32 [N, K]: what the constexpr op dequantizes to, rounded to the program's fp16."""
        n, k = self.data.shape
        w = self.data.reshape(n, k // self.group, self.group).astype(np.float32)
        w *= self.scale.astype(np.float32)[..., None]
        return w.reshape(n, k).astype(np.float16).astype(np.float32)

    def weight(self) -> torch.Tensor:
        """float32 [N, K]: the weight the program computes with, the correction folded in (for the eager reference)."""
        w = self.main_weight()
        if self.correction is not None:
            w += np.repeat(self.correction.astype(np.float32), self.group, axis=1)
        return torch.from_numpy(w)


def _exact16(a: np.ndarray) -> tuple[np.ndarray, bool]:
    h = a.astype(np.float16)
    return h, not np.array_equal(h.astype(np.float32), a)


def to_grid(t: QuantizedTensor, name: str) -> SourceGrid:
    """The tensor's own codes, scales and minimums on a constexpr_blockwise_shift_scale grid."""
    if t.bits > max(CARRIER_BITS):
        raise UnsupportedOption(f"{name} ({t.source}: {t.bits}-bit codes) does not fit Core ML's int4 / int8 weights; "
                                "export it with quant 'w8' or 'fp16' instead")
    bits = next(b for b in CARRIER_BITS if b >= t.bits)
    zero = 1 << (t.bits - 1)
    data = (t.codes.numpy().astype(np.int16) - zero).astype(np.int8)   # -2**(b-1) .. 2**(b-1) - 1: fits int{bits}
    scales = t.scales.detach().numpy().astype(np.float32, copy=False)
    scale, rounded = _exact16(scales)
    correction = None
    if t.mins is not None:   # w = d * q + m = d * (q - z) + (m + z * d)
        correction, rounded_c = _exact16(t.mins.detach().numpy().astype(np.float32) + np.float32(zero) * scales)
        rounded = rounded or rounded_c
    return SourceGrid(bits, t.group_size, data, scale, correction, t.source, rounded)


def source_grids(model) -> dict[str, SourceGrid]:
    """Every 2-D weight the checkpoint stores quantized, as a grid; weights stored as floats are not in it (they stay
    fp16). Raises when the checkpoint holds no quantized weights at all."""
    source = getattr(model, "source_quant", None) or {}
    if not source:
        raise UnsupportedOption(f"quant 'source' keeps a quantized checkpoint's own grids, and {str(model.source)!r} "
                                "was loaded from float weights (an HF folder or a float GGUF); use quant 'w4' or "
                                "'w8' (or 'fp16')")
    return {name: to_grid(t, name) for name, t in source.items()}


def describe(grids: dict[str, SourceGrid], float_weights: list[str]) -> dict[str, list[str]]:
    """The artifact's record: the block types kept, the 2-D weights left in fp16, those whose numbers fp16 rounded."""
    return {"kept": sorted({g.source for g in grids.values()}), "float": sorted(float_weights),
            "rounded_to_fp16": sorted(n for n, g in grids.items() if g.rounded)}
