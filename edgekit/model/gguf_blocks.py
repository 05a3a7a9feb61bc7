"""GGUF block types -> QuantizedTensor: the file's own codes, scales and minimums, vectorised over all blocks.

Each decoder takes the raw blocks [n_blocks, type_size] (uint8) and returns codes [n_blocks, block_size],
scales and mins [n_blocks, groups per block] (mins None for symmetric types). The scale products are computed in
float32 exactly as the `gguf` package (and llama.cpp) computes them, so `QuantizedTensor.dequantize()` reproduces
`gguf.quants.dequantize` bit for bit. K-quant super-blocks of 256 become their sub-blocks: groups of 32 (Q4_K,
Q5_K) or 16 (Q2_K, Q3_K, Q6_K), the sub-block scale folded into the group's scale (and minimum).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from edgekit.quant.tensor import QuantizedTensor

Decoded = tuple[np.ndarray, np.ndarray, "np.ndarray | None"]


def _f16(b: np.ndarray) -> np.ndarray:
    """Two bytes per row (little-endian fp16) -> float32 [n, 1]."""
    return np.ascontiguousarray(b).view(np.float16).astype(np.float32)


def _bits(packed: np.ndarray, width: int, nbits: int) -> np.ndarray:
    """ggml's packing: per run of `width` bytes, the lowest `nbits` of each byte first, then the next bits, ..."""
    n = packed.shape[0]
    shifts = np.arange(0, 8, nbits, dtype=np.uint8).reshape(1, 1, -1, 1)
    out = (packed.reshape(n, -1, 1, width) >> shifts) & np.uint8((1 << nbits) - 1)
    return out.reshape(n, -1)


def _high_bits(qh: np.ndarray) -> np.ndarray:
    """Q5_0/Q5_1's 32-bit mask: bit j (little-endian) is element j's fifth bit."""
    return np.unpackbits(np.ascontiguousarray(qh), axis=-1, bitorder="little")


def _q4_0(b: np.ndarray) -> Decoded:
    return _bits(b[:, 2:], 16, 4), _f16(b[:, :2]), None


def _q4_1(b: np.ndarray) -> Decoded:
    return _bits(b[:, 4:], 16, 4), _f16(b[:, :2]), _f16(b[:, 2:4])


def _q5_0(b: np.ndarray) -> Decoded:
    return _bits(b[:, 6:], 16, 4) | (_high_bits(b[:, 2:6]) << np.uint8(4)), _f16(b[:, :2]), None


def _q5_1(b: np.ndarray) -> Decoded:
    codes = _bits(b[:, 8:], 16, 4) | (_high_bits(b[:, 4:8]) << np.uint8(4))
    return codes, _f16(b[:, :2]), _f16(b[:, 2:4])


def _q8_0(b: np.ndarray) -> Decoded:
    return b[:, 2:] ^ np.uint8(0x80), _f16(b[:, :2]), None  # int8 q -> q + 128


def _q2_k(b: np.ndarray) -> Decoded:
    sc, qs, d, dmin = b[:, :16], b[:, 16:80], _f16(b[:, 80:82]), _f16(b[:, 82:84])
    scales = d * (sc & np.uint8(0x0F)).astype(np.float32)
    mins = -(dmin * (sc >> np.uint8(4)).astype(np.float32))
    return _bits(qs, 32, 2), scales, mins


def _q3_k(b: np.ndarray) -> Decoded:
    hmask, qs, sc, d = b[:, :32], b[:, 32:96], b[:, 96:108], _f16(b[:, 108:110])
    n = b.shape[0]
    low = (sc[:, :8].reshape(n, 1, 8) >> np.array([0, 4], np.uint8).reshape(1, 2, 1)).reshape(n, 16)
    high = (sc[:, 8:].reshape(n, 1, 4) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 4, 1)).reshape(n, 16)
    six = (low & np.uint8(0x0F)) | ((high & np.uint8(0x03)) << np.uint8(4))
    scales = d * (six.astype(np.int8) - np.int8(32)).astype(np.float32)
    # a set hmask bit means "no -4 offset": code = q + 4 with q = low2 - 4 * (1 - bit)
    return _bits(qs, 32, 2) | (_bits(hmask, 32, 1) << np.uint8(2)), scales, None


def _k_scale_min(sc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K's 12 bytes -> eight 6-bit scales and eight 6-bit minimums (ggml's get_scale_min_k4)."""
    n = sc.shape[0]
    s = sc.reshape(n, 3, 4)
    d, m, md = s[:, 0], s[:, 1], s[:, 2]
    scale = np.concatenate([d & np.uint8(0x3F), (md & np.uint8(0x0F)) | ((d >> np.uint8(2)) & np.uint8(0x30))], axis=-1)
    mn = np.concatenate([m & np.uint8(0x3F), (md >> np.uint8(4)) | ((m >> np.uint8(2)) & np.uint8(0x30))], axis=-1)
    return scale, mn


def _k_grid(b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d, dmin = _f16(b[:, :2]), _f16(b[:, 2:4])
    sc, mn = _k_scale_min(b[:, 4:16])
    return d * sc.astype(np.float32), -(dmin * mn.astype(np.float32))


def _q4_k(b: np.ndarray) -> Decoded:
    scales, mins = _k_grid(b)
    return _bits(b[:, 16:], 32, 4), scales, mins


def _q5_k(b: np.ndarray) -> Decoded:
    scales, mins = _k_grid(b)
    return _bits(b[:, 48:], 32, 4) | (_bits(b[:, 16:48], 32, 1) << np.uint8(4)), scales, mins


def _q6_k(b: np.ndarray) -> Decoded:
    ql, qh, sc, d = b[:, :128], b[:, 128:192], b[:, 192:208], _f16(b[:, 208:210])
    scales = d * np.ascontiguousarray(sc).view(np.int8).astype(np.float32)
    return _bits(ql, 64, 4) | (_bits(qh, 32, 2) << np.uint8(4)), scales, None


class BlockType:
    def __init__(self, bits: int, group_size: int, block_size: int, type_size: int,
                 decode: Callable[[np.ndarray], Decoded]):
        self.bits, self.group_size, self.block_size, self.type_size, self.decode = (
            bits, group_size, block_size, type_size, decode)


# GGML type name -> layout; block and type sizes as in gguf.GGML_QUANT_SIZES (checked in tests)
BLOCK_TYPES: dict[str, BlockType] = {
    "Q4_0": BlockType(4, 32, 32, 18, _q4_0), "Q4_1": BlockType(4, 32, 32, 20, _q4_1),
    "Q5_0": BlockType(5, 32, 32, 22, _q5_0), "Q5_1": BlockType(5, 32, 32, 24, _q5_1),
    "Q8_0": BlockType(8, 32, 32, 34, _q8_0),
    "Q2_K": BlockType(2, 16, 256, 84, _q2_k), "Q3_K": BlockType(3, 16, 256, 110, _q3_k),
    "Q4_K": BlockType(4, 32, 256, 144, _q4_k), "Q5_K": BlockType(5, 32, 256, 176, _q5_k),
    "Q6_K": BlockType(6, 16, 256, 210, _q6_k),
}


def decode_gguf_blocks(raw: np.ndarray, type_name: str, n_cols: int) -> QuantizedTensor:
    """Raw GGUF tensor bytes (rows of blocks, any leading shape) of `type_name` -> QuantizedTensor [rows, n_cols]."""
    bt = BLOCK_TYPES[type_name]
    if n_cols % bt.block_size:
        raise ValueError(f"a {type_name} row of {n_cols} values is not a whole number of {bt.block_size}-blocks")
    blocks = np.asarray(raw, dtype=np.uint8).reshape(-1, bt.type_size)
    n_rows = blocks.shape[0] * bt.block_size // n_cols
    codes, scales, mins = bt.decode(blocks)
    groups = n_cols // bt.group_size

    def as_torch(a: np.ndarray, cols: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a).reshape(n_rows, cols))

    return QuantizedTensor(as_torch(codes, n_cols), as_torch(scales, groups),
                           None if mins is None else as_torch(mins, groups), bt.bits, bt.group_size,
                           f"gguf:{type_name}")
