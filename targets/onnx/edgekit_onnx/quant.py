"""Weight quantization for the ONNX target: what each scheme means, block-wise packing, and dequantization.

Packing goes through ONNX Runtime's own C++ routines (`quantize_matmul_4bits` / `quantize_matmul_8bits`, the ones
`MatMulNBitsQuantizer` calls), one weight at a time while the graph is built: no fp32 ONNX model of the whole
network is ever held in memory. The packed layout `[N, K/block, block*bits/8]` is what `MatMulNBits` reads and, for
an embedding table `[V, H]`, exactly what `GatherBlockQuantized` (uint8 data, packed along H) reads too.
Quantization is symmetric: no zero points are stored, both ops then use their default (2^(bits-1)).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgekit.errors import UnsupportedOption

QUANT_SCHEMES = ("fp32", "fp16", "int4")
BLOCK_SIZES = (32, 64, 128)
ACCURACY_LEVELS = (0, 1, 4)       # MatMulNBits: 0 unset (= fp32), 1 fp32 activations, 4 int8 activations
LAYER_BITS = (4, 8)
# Block 128 by default: on this x86 machine MLAS' int8-activation kernels ran a Qwen2.5-0.5B decode step 1.4x faster
# than at block 32 (interleaved A/B in one process; benchmarks/results/onnx.md) and read 15% fewer bytes per token
# (4.25 instead of 5 bits per weight with fp32 scales). The price is accuracy: on SmolLM2-135M (real weights, 116
# teacher-forced tokens) top-1 agreement with fp32 was 0.603 at block 32, 0.560 at 64, 0.534 at 128 (0.595 with the
# linears at 128 and the lm_head/embedding table at 32: the table carries most of the loss). block_size=32 for accuracy.
DEFAULT_BLOCK_SIZE = 128


@dataclass(frozen=True)
class QuantPlan:
    """What a TargetSpec's quant scheme and options mean for each kind of tensor."""

    scheme: str = "fp32"
    block_size: int = DEFAULT_BLOCK_SIZE
    accuracy_level: int = 4
    embedding_bits: int | None = None   # None: float embedding (Gather); 8 / 4: GatherBlockQuantized
    output_bits: int | None = None      # None: float lm_head (MatMul); 8 / 4: MatMulNBits

    @property
    def float_dtype(self) -> str:
        return "fp16" if self.scheme == "fp16" else "fp32"

    @property
    def linear_bits(self) -> int | None:
        return 4 if self.scheme == "int4" else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_for(scheme: str, options: dict[str, Any]) -> QuantPlan:
    """Turn a quant scheme + target options into a QuantPlan; bad values raise UnsupportedOption naming the choices."""
    if scheme not in QUANT_SCHEMES:
        raise UnsupportedOption(f"quant scheme {scheme!r} is not supported by target 'onnx'; "
                                f"supported: {', '.join(QUANT_SCHEMES)}")
    quantized = scheme == "int4"
    block = int(options.get("block_size", DEFAULT_BLOCK_SIZE))
    level = int(options.get("accuracy_level", 4))
    emb = options.get("embedding_bits", 4 if quantized else None)
    out = options.get("output_bits", 4 if quantized else None)
    _check(block, BLOCK_SIZES, "block_size")
    _check(level, ACCURACY_LEVELS, "accuracy_level")
    for name, bits in (("embedding_bits", emb), ("output_bits", out)):
        if bits is not None:
            _check(int(bits), LAYER_BITS, name)
    if not quantized and ("block_size" in options or "accuracy_level" in options):
        raise UnsupportedOption(f"block_size / accuracy_level apply to quant 'int4' only, not {scheme!r}")
    if scheme == "fp16" and (emb is not None or out is not None):
        raise UnsupportedOption("embedding_bits / output_bits need an fp32 or int4 export (fp16 keeps float tables)")
    return QuantPlan(scheme, block, level, None if emb is None else int(emb), None if out is None else int(out))


def _check(value: int, accepted: tuple[int, ...], name: str) -> None:
    if value not in accepted:
        raise UnsupportedOption(f"{name}={value} is not supported by target 'onnx'; "
                                f"accepted: {', '.join(map(str, accepted))}")


def pack_blockwise(weight: np.ndarray, bits: int, block_size: int, rows_per_chunk: int = 4096
                   ) -> tuple[np.ndarray, np.ndarray]:
    """weight float [N, K] (torch Linear layout, or an embedding [V, H]) -> (packed uint8 [N, K/block, blob],
    scales float32 [N, K/block]), symmetric, with ORT's own quantization routine. Output rows are independent, so
    the work goes in chunks of rows: the float32 transposed copy ORT wants never exceeds one chunk (a 150k-row
    embedding would otherwise cost two extra full-size float32 copies)."""
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits

    n, k = weight.shape
    k_blocks = (k + block_size - 1) // block_size
    blob = block_size * bits // 8
    packed = np.zeros((n, k_blocks, blob), dtype=np.uint8)
    scales = np.zeros((n, k_blocks), dtype=np.float32)
    pack = quantize_matmul_4bits if bits == 4 else quantize_matmul_8bits
    for r0 in range(0, n, rows_per_chunk):
        r1 = min(n, r0 + rows_per_chunk)
        wt = np.ascontiguousarray(weight[r0:r1].T, dtype=np.float32)      # ORT wants [K, rows]
        if k_blocks * block_size != k:
            wt = np.pad(wt, ((0, k_blocks * block_size - k), (0, 0)))
        p = np.zeros((r1 - r0, k_blocks, blob), dtype=np.uint8)
        s = np.zeros((r1 - r0, k_blocks), dtype=np.float32)
        zero_points = np.zeros((r1 - r0, (k_blocks + 1) // 2 if bits == 4 else k_blocks), dtype=np.uint8)
        pack(p, wt, s, zero_points, block_size, r1 - r0, k_blocks * block_size, True)
        packed[r0:r1], scales[r0:r1] = p, s
    return packed, scales


def dequantize(packed: np.ndarray, scales: np.ndarray, bits: int, k: int) -> np.ndarray:
    """Inverse of pack_blockwise: float32 [N, K] = (q - 2^(bits-1)) * scale, exactly what the ORT kernels use."""
    n, k_blocks, _ = packed.shape
    flat = packed.reshape(n, -1)
    if bits == 4:
        q = np.empty((n, flat.shape[1] * 2), dtype=np.float32)
        q[:, 0::2] = flat & 0x0F
        q[:, 1::2] = flat >> 4
    else:
        q = flat.astype(np.float32)
    q -= float(1 << (bits - 1))
    block = q.shape[1] // k_blocks
    w = (q.reshape(n, k_blocks, block) * scales[:, :, None]).reshape(n, -1)
    return np.ascontiguousarray(w[:, :k])
