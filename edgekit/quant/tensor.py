"""QuantizedTensor: a weight matrix as integer codes on per-group grids, the one form every target packs from."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class QuantizedTensor:
    """A [N, K] weight as codes with one scale (and optionally one minimum) per group of `group_size` along K.

    With `mins`: w = scales * codes + mins (asymmetric, like GGUF Q4_1 / Q4_K). Without: symmetric around the middle
    code, w = scales * (codes - 2**(bits-1)) (like GGUF Q4_0 / Q8_0 and XNNPACK's int4 after a shift).
    The product is taken before the sum, one float32 rounding each, as llama.cpp's own dequantization does, so a
    GGUF's tensor dequantizes bit-exactly."""

    codes: torch.Tensor        # uint8 [N, K], unsigned codes in 0 .. 2**bits - 1
    scales: torch.Tensor       # float32 [N, K // group_size]
    mins: torch.Tensor | None  # float32 [N, K // group_size], or None (symmetric)
    bits: int
    group_size: int
    source: str                # e.g. "gguf:Q4_1", "rtn", "search"

    def __post_init__(self) -> None:
        n, k = self.codes.shape
        if self.codes.dtype != torch.uint8:
            raise ValueError(f"codes must be uint8, got {self.codes.dtype}")
        if not 1 <= self.bits <= 8:
            raise ValueError(f"bits must be 1..8, got {self.bits}")
        if self.group_size <= 0 or k % self.group_size:
            raise ValueError(f"group_size {self.group_size} does not divide K={k}")
        groups = (n, k // self.group_size)
        for name in ("scales", "mins"):
            t = getattr(self, name)
            if t is not None and (tuple(t.shape) != groups or t.dtype != torch.float32):
                raise ValueError(f"{name} must be float32 {list(groups)}, got {t.dtype} {list(t.shape)}")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.codes.shape)  # type: ignore[return-value]

    @property
    def symmetric(self) -> bool:
        return self.mins is None

    def dequantize(self) -> torch.Tensor:
        """float32 [N, K]."""
        n, k = self.codes.shape
        w = self.codes.reshape(n, k // self.group_size, self.group_size).to(torch.float32)
        if self.mins is None:  # in place: one float32 [N, K] allocation for a 150k-row embedding, not three
            w.sub_(float(2 ** (self.bits - 1))).mul_(self.scales[..., None])
        else:
            w.mul_(self.scales[..., None]).add_(self.mins[..., None])
        return w.reshape(n, k)

    def rows(self, index: torch.Tensor) -> QuantizedTensor:
        """The same tensor with its rows reordered/selected by `index` (codes, scales and mins alike)."""
        return QuantizedTensor(self.codes[index], self.scales[index],
                               None if self.mins is None else self.mins[index], self.bits, self.group_size,
                               self.source)
