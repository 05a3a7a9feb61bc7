"""Weight quantization schemes; coremltools.optimize's arithmetic applied to the eager reference (builder.py applies
the same function when it emits the quantized weights)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from edgekit.errors import UnsupportedOption

SCHEMES = ("fp16", "w8", "w4", "source")
GRANULARITIES = ("per_block", "per_channel")


@dataclass(frozen=True)
class CoreMLQuant:
    scheme: str                 # "fp16" | "w8" | "w4" | "source"
    bits: int | None            # None for fp16 and source (the checkpoint's own bits, per tensor)
    granularity: str | None     # "per_channel" | "per_block"
    block_size: int | None      # input-axis block for per_block
    mode: str = "linear_symmetric"

    @property
    def block_sizes(self) -> list[int]:
        """coremltools block_size per weight axis for a [out, in] matrix: 1 row, `block_size` (0 = all) columns."""
        return [1, self.block_size if self.granularity == "per_block" else 0]

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def quant_for(scheme: str, options: dict[str, Any]) -> CoreMLQuant:
    if scheme == "fp16":
        return CoreMLQuant("fp16", None, None, None)
    if scheme == "source":
        fixed = sorted(set(options) & {"granularity", "block_size"})
        if fixed:
            raise UnsupportedOption(f"{', '.join(fixed)} cannot be set with quant 'source', which keeps the "
                                    "checkpoint's own grids (its groups and bits); use quant 'w4' or 'w8' to choose them")
        return CoreMLQuant("source", None, "per_block", None, mode="source")
    if scheme not in SCHEMES:
        raise UnsupportedOption(f"quant scheme {scheme!r} is not supported by target 'coreml'; supported: "
                                f"{', '.join(SCHEMES)}")
    default = "per_channel" if scheme == "w8" else "per_block"
    granularity = options.get("granularity", default)
    if granularity not in GRANULARITIES:
        raise UnsupportedOption(f"granularity {granularity!r} is not supported; supported: {', '.join(GRANULARITIES)}")
    block = int(options.get("block_size", 32)) if granularity == "per_block" else None
    if block is not None and block not in (16, 32, 64, 128):
        raise UnsupportedOption(f"block_size {block} is not supported; supported: 16, 32, 64, 128")
    return CoreMLQuant(scheme, 8 if scheme == "w8" else 4, granularity, block)


def weight_names(state_names: list[str]) -> list[str]:
    """The decoder parameters that get quantized: every 2-D weight (linears, embedding, lm head)."""
    return [n for n in state_names if n.endswith("weight") and "norm" not in n]


def fake_quantize(weight: torch.Tensor, q: CoreMLQuant) -> torch.Tensor:
    """What the artifact computes with: the fp16 weight, quantized and dequantized exactly as coremltools does."""
    from coremltools.converters.mil.mil import types
    from coremltools.optimize._utils import compute_qparams_by_dtype

    w16 = weight.detach().to(torch.float16).numpy()
    dtype = types.string_to_builtin(f"int{q.bits}")
    res = compute_qparams_by_dtype(w16, dtype, q.mode.upper(), q.block_sizes)
    if res is None:
        raise UnsupportedOption(f"weight of shape {tuple(weight.shape)} cannot be split in blocks of {q.block_size}; "
                                f"use -O granularity=per_channel or another block_size")
    data, scale, offset = res
    full = data.astype(np.float32)
    scale_f = _repeat_blocks(np.asarray(scale, np.float32), full.shape)
    if offset is not None:
        full = full - _repeat_blocks(np.asarray(offset, np.float32), full.shape)
    deq = (full * scale_f).astype(np.float16)
    return torch.from_numpy(deq).to(weight.dtype)


def _repeat_blocks(param: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    for axis, (n, m) in enumerate(zip(shape, param.shape)):
        if m != n:
            param = np.repeat(param, n // m, axis=axis)
    return param
