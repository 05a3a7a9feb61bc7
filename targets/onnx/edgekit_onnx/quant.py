"""Weight quantization for the ONNX target: what each scheme means, block-wise packing, and dequantization.

Packing goes through ONNX Runtime's own C++ routines (`quantize_matmul_4bits` / `quantize_matmul_8bits`, the ones
`MatMulNBitsQuantizer` calls), one weight at a time while the graph is built: no fp32 ONNX model of the whole
network is ever held in memory. The packed layout `[N, K/block, block*bits/8]` is what `MatMulNBits` reads and, for
an embedding table `[V, H]`, exactly what `GatherBlockQuantized` (uint8 data, packed along H) reads too.
Quantization is symmetric: no zero points are stored, both ops then use their default (2^(bits-1)).

`linear_kernel="edgekit"` runs the int4 linears (and a 4-bit token embedding) in edgekit's own kernel instead of
MatMulNBits: a custom-op library (edgekit_onnx/kernels) with the same arithmetic as MatMulNBits at accuracy level 4
(int8 activations per block, symmetric), its weights in the kernel's 16-row tiles with bf16 block scales
(edgekit/kernels/q4.py). The codes are ORT's own (the same routine), so only the scales' rounding to bf16 differs.
The graph runs LinearQ4 with per-group (symmetric) activations only, so the tiles' row sums are not stored.
With quant 'source' the same option also runs a checkpoint's 8-bit grids in edgekit's LinearQ8 / GatherQ8: one copy
of a tied Q8_0 table with its fp16 scales serves both the embedding and the output layer (MatMulNBits takes scales
only in the activations' type, fp32, twice the bytes; builder.py).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from edgekit.errors import UnsupportedOption

# "source": a quantized checkpoint's own grids (a GGUF's blocks), kept as they are (edgekit_onnx/source_grid.py)
QUANT_SCHEMES = ("fp32", "fp16", "int4", "source")
LINEAR_KERNELS = ("mlas", "edgekit")   # who runs the int4 linears: ORT's MatMulNBits (MLAS), or edgekit's kernel
BLOCK_SIZES = (32, 64, 128)
# who picks the int4 linears' codes: ORT's own round-to-nearest, edgekit's per-group scale search, or GPTQ on
# calibration text (edgekit/quant/gptq.py); the last two go into the graph as grids (edgekit_onnx/source_grid.py)
QUANTIZERS = ("rtn", "search", "gptq")
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
    embedding_bits: int | None = None   # None: float embedding (Gather); 8 / 4: GatherBlockQuantized (or GatherQ4)
    output_bits: int | None = None      # None: float lm_head (MatMul); 8 / 4: MatMulNBits (or LinearQ4 at 4)
    linear_kernel: str = "mlas"         # "edgekit": every 4-bit linear and table in edgekit's kernel (LinearQ4)
    quantizer: str = "rtn"              # int4 linears: "rtn" (ORT's routine), "search" or "gptq" (edgekit.quant)
    calibration: str | None = None      # gptq: a UTF-8 text file; None: the calibration text shipped with edgekit
    quantizer_output: bool = False      # the 4-bit output layer by the quantizer too (a tied table shares its codes)

    @property
    def float_dtype(self) -> str:
        return "fp16" if self.scheme == "fp16" else "fp32"

    @property
    def linear_bits(self) -> int | None:
        return 4 if self.scheme == "int4" else None

    @property
    def edgekit_kernel(self) -> bool:
        return self.linear_kernel == "edgekit"

    def tiled(self, bits: int | None) -> bool:
        """Whether a tensor quantized to `bits` is stored in edgekit's tiled layout (and run by its kernel)."""
        return self.edgekit_kernel and bits == 4

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def linear_in_features(cfg) -> tuple[int, ...]:
    """The input widths of the graph's linears (q|k|v, gate|up and the output layer read the hidden size)."""
    return tuple(sorted({cfg.hidden_size, cfg.q_dim, cfg.intermediate_size}))


def plan_for(scheme: str, options: dict[str, Any], in_features: tuple[int, ...] = ()) -> QuantPlan:
    """Turn a quant scheme + target options into a QuantPlan; bad values raise UnsupportedOption naming the choices.
    `in_features` (linear_in_features(cfg)) lets linear_kernel 'edgekit' pick and check its block size: the kernel
    needs a block that divides every linear's input width (the default is the largest of 128 / 64 / 32 that does)."""
    if scheme not in QUANT_SCHEMES:
        raise UnsupportedOption(f"quant scheme {scheme!r} is not supported by target 'onnx'; "
                                f"supported: {', '.join(QUANT_SCHEMES)}")
    if scheme == "source":
        return _source_plan(options)
    quantized = scheme == "int4"
    kernel = str(options.get("linear_kernel", "mlas"))
    if kernel not in LINEAR_KERNELS:
        raise UnsupportedOption(f"linear_kernel={kernel!r} is not supported by target 'onnx'; "
                                f"accepted: {', '.join(LINEAR_KERNELS)}")
    if kernel == "edgekit" and not quantized:
        raise UnsupportedOption(f"linear_kernel 'edgekit' runs int4 linears: it needs quant 'int4', not {scheme!r}")
    block = int(options.get("block_size", _edgekit_block(in_features) if kernel == "edgekit" else DEFAULT_BLOCK_SIZE))
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
    if kernel == "edgekit" and in_features and any(k % block for k in in_features):
        fits = [b for b in BLOCK_SIZES if all(k % b == 0 for k in in_features)]
        raise UnsupportedOption(f"block_size={block} does not divide every linear's input width "
                                f"({', '.join(map(str, in_features))}), which linear_kernel 'edgekit' needs; "
                                f"accepted here: {', '.join(map(str, fits)) or 'none (use linear_kernel mlas)'}")
    quantizer, calibration = _quantizer(options, quantized)
    head = str(options.get("quantizer_output", False)).lower() in ("1", "true", "yes")
    if head and (quantizer == "rtn" or out is None or int(out) != 4 or kernel != "mlas"):
        raise UnsupportedOption("quantizer_output needs quantizer 'search' or 'gptq', output_bits 4 and linear_kernel "
                                f"'mlas' (got quantizer {quantizer!r}, output_bits {out!r}, linear_kernel {kernel!r})")
    return QuantPlan(scheme, block, level, None if emb is None else int(emb), None if out is None else int(out),
                     kernel, quantizer, calibration, head)


def _quantizer(options: dict[str, Any], quantized: bool) -> tuple[str, str | None]:
    quantizer = str(options.get("quantizer", "rtn"))
    if quantizer not in QUANTIZERS:
        raise UnsupportedOption(f"quantizer={quantizer!r} is not supported by target 'onnx'; "
                                f"accepted: {', '.join(QUANTIZERS)}")
    if quantizer != "rtn" and not quantized:
        raise UnsupportedOption(f"quantizer={quantizer!r} chooses int4 codes: it needs quant 'int4'")
    calibration = options.get("calibration")
    if calibration is not None and quantizer != "gptq":
        raise UnsupportedOption(f"calibration={calibration!r} is read by quantizer 'gptq' only, not {quantizer!r}")
    return quantizer, None if calibration is None else str(calibration)


def _source_plan(options: dict[str, Any]) -> QuantPlan:
    """The checkpoint's own groups and bits: only who quantizes activations is left to choose."""
    fixed = sorted(set(options) & {"block_size", "embedding_bits", "output_bits", "quantizer", "calibration",
                                   "quantizer_output"})
    if fixed:
        raise UnsupportedOption(f"{', '.join(fixed)} cannot be set with quant 'source', which keeps the checkpoint's "
                                "own grids (its groups and bits); use quant 'int4' to choose them")
    level = int(options.get("accuracy_level", 4))
    _check(level, ACCURACY_LEVELS, "accuracy_level")
    kernel = str(options.get("linear_kernel", "mlas"))
    if kernel not in LINEAR_KERNELS:
        raise UnsupportedOption(f"linear_kernel={kernel!r} is not supported by target 'onnx'; "
                                f"accepted: {', '.join(LINEAR_KERNELS)}")
    return QuantPlan("source", DEFAULT_BLOCK_SIZE, level, None, None, kernel)


def _edgekit_block(in_features: tuple[int, ...]) -> int:
    for block in sorted(BLOCK_SIZES, reverse=True):
        if all(k % block == 0 for k in in_features):
            return block
    return DEFAULT_BLOCK_SIZE   # none divides: plan_for reports it with the accepted choices


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


def pack_tiled(weight: torch.Tensor, block_size: int, rows_per_chunk: int = 8192
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """weight [N, K] -> edgekit's tiled layout (packed uint8 [N_pad*K/2], bf16 scales as uint16 [N_pad*K/block],
    fp32 rowsum [N_pad]). The codes and scales are ORT's own symmetric 4-bit quantization (pack_blockwise), the scales
    then rounded to bf16. In chunks of rows (a multiple of the 16-row tile), each converted to fp32 only when packed."""
    from edgekit.kernels import q4

    n, k = weight.shape
    if k % block_size:
        raise ValueError(f"block {block_size} does not divide the input width {k}")
    parts = []
    for r0 in range(0, n, rows_per_chunk):
        packed, scales = pack_blockwise(weight[r0:r0 + rows_per_chunk].detach().float().numpy(), 4, block_size)
        flat = packed.reshape(packed.shape[0], -1)
        codes = np.empty((flat.shape[0], flat.shape[1] * 2), dtype=np.int8)
        codes[:, 0::2] = (flat & 0x0F).astype(np.int8) - 8
        codes[:, 1::2] = (flat >> 4).astype(np.int8) - 8
        p, s, r = q4.pack(torch.from_numpy(codes), torch.from_numpy(scales), block_size)
        parts.append((p.numpy(), s.view(torch.int16).numpy().view(np.uint16), r.numpy()))
    return tuple(np.concatenate([part[i] for part in parts]) for i in range(3))


def dequantize_tiled(packed: np.ndarray, scales: np.ndarray, block_size: int, n: int, k: int) -> torch.Tensor:
    """The fp32 weight [N, K] a tiled tensor holds (codes times bf16 scales), what LinearQ4 / GatherQ4 compute with."""
    from edgekit.kernels import q4

    s16 = torch.from_numpy(np.ascontiguousarray(scales).view(np.int16)).view(torch.bfloat16)
    return q4.unpack(torch.from_numpy(np.ascontiguousarray(packed)), s16, block_size, n, k)


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
