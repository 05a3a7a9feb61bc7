"""quant 'source' for ExecuTorch: a quantized checkpoint's own grids (a GGUF's blocks) in the .pte, weight for weight.

Re-quantizing a GGUF's weights onto another grid costs quality no later step wins back, so every linear whose parts
are 4-bit in the file runs in edgekit's int4 kernel on the file's codes, with its fp16 scales and minimums as stored
(GGUF Q4_0 / Q4_1 keep d and m in fp16: exact) and activations quantized per group of the weight's group (llama.cpp's
Q8_1 product; per token costs SmolLM2 KL 0.037 instead of 0.003). Fused q|k|v and gate|up stack the parts' rows;
a symmetric part takes minimum -8 * scale beside an asymmetric one (exact: a power of two times an fp16 value).

The rest is what ExecuTorch can hold of the file:
- the token embedding: a symmetric 8- or 4-bit table (Q8_0, Q4_0) as stored, in quantized_decomposed's
  group-wise embedding kernels (codes - 2**(bits-1) as int8, one fp32 scale per group: exact), or, tied to an 8-bit
  head, in edgekit::embedding_q8 over the head's own constant (below);
- a symmetric 8-bit output layer (SmolLM2's tied Q8_0 head) exactly, in edgekit's int8 kernel (edgekit::linear_q8:
  the file's int8 codes and fp16 scales, activations per group as for Q8_0 x Q8_0 in llama.cpp). A tied table is one
  constant: the token lookup reads the same packed codes (edgekit::embedding_q8), so the .pte holds the file's table
  once (SmolLM2-135M: 30 MB, where an int8 copy for quantized_decomposed's embedding beside a [hi | lo] nibble split
  for the int4 kernel took 63 MB). XNNPACK has no group-wise 8-bit GEMM: per channel it cost SmolLM2 KL ~0.01;
- any other output layer (Q6_K, Q5_0, ...): re-quantized to int8 per output channel (HQQ scales, int8 activations
  per token in XNNPACK); the artifact's metadata lists it;
- a Q8_0 linear runs in edgekit's int8 kernel on the file's codes; any other linear that is not 4-bit in the file
  (Q5_0, Q6_K, ...: Gemma 3's Q4_K_M file holds most of its linears so) is re-quantized to the same int8 grid, groups
  of 32 with fp16 scales (8 bits over a 5- or 6-bit grid: far below what the file's own rounding cost; a float copy
  was 4 bytes per weight, twice the whole file for Gemma 3 270M); the artifact's metadata lists each.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from edgekit.errors import UnsupportedOption
from edgekit.kernels.q4 import fake_quantize_groups
from edgekit.quant.tensor import QuantizedTensor

KERNEL_GROUPS = range(8, 257, 8)   # what edgekit's int4 kernel takes (G % 8 == 0, G <= 256)
FUSED = {"qkv": ("attention", ("wq", "wk", "wv")), "wo": ("attention", ("wo",)),
         "gate_up": ("feed_forward", ("w1", "w3")), "down": ("feed_forward", ("w2",))}
EMBEDDING, OUTPUT = "tok_embeddings.weight", "output.weight"


@dataclass(frozen=True)
class KernelGrid:
    """One (possibly fused) linear [N, K] on q4.pack's convention: signed codes and no mins when every part is
    symmetric (w = s * q), else unsigned codes 0..15 and w = s * q + m."""

    codes: torch.Tensor
    scales: torch.Tensor            # float32 [N, K / group], exact in fp16 for Q4_0 / Q4_1
    group: int
    mins: torch.Tensor | None
    sources: tuple[str, ...]
    rows: tuple[int, ...]           # each part's row count, in order

    def as_pack_args(self) -> tuple:
        return self.codes, self.scales, self.group, self.mins

    def weight(self) -> torch.Tensor:
        """float32 [N, K]: what the kernel computes with (scales and minimums rounded to fp16 as it stores them)."""
        n, k = self.codes.shape
        w = self.codes.to(torch.float32).view(n, k // self.group, self.group) * self.scales.half().float()[..., None]
        if self.mins is not None:
            w = w + self.mins.half().float()[..., None]
        return w.reshape(n, k)

    def exact_in_fp16(self) -> bool:
        parts = [self.scales] + ([] if self.mins is None else [self.mins])
        return all(torch.equal(t.half().float(), t) for t in parts)


def kernel_grid(parts: list[QuantizedTensor]) -> KernelGrid | None:
    """The parts (row blocks of one fused linear) on one int4 grid, each as stored; None when a part is not 4-bit or
    the group does not suit the kernel (the linear then stays float)."""
    if any(t.bits != 4 for t in parts) or len({t.shape[1] for t in parts}) != 1:
        return None
    group = min(t.group_size for t in parts)
    if group not in KERNEL_GROUPS or any(t.group_size % group for t in parts):
        return None
    symmetric = all(t.mins is None for t in parts)
    codes, scales, mins = [], [], []
    for t in parts:
        s = t.scales.repeat_interleave(t.group_size // group, dim=1)
        scales.append(s)
        if symmetric:
            codes.append(t.codes.to(torch.int8) - 8)
        else:
            codes.append(t.codes)
            m = -8 * s if t.mins is None else t.mins.repeat_interleave(t.group_size // group, dim=1)
            mins.append(m)
    return KernelGrid(torch.cat(codes), torch.cat(scales), group, None if symmetric else torch.cat(mins),
                      tuple(sorted({t.source for t in parts})), tuple(t.shape[0] for t in parts))


@dataclass(frozen=True)
class Q8Grid:
    """A symmetric 8-bit tensor (Q8_0) for edgekit's int8 kernel: int8 codes (stored code - 128), w = s * code."""

    codes: torch.Tensor             # int8 [N, K]
    scales: torch.Tensor            # float32 [N, K / group], exact in fp16 for Q8_0
    group: int
    sources: tuple[str, ...]
    mins = None

    def weight(self) -> torch.Tensor:
        """float32 [N, K]: the file's dequantization with the scales as the kernel stores them (fp16)."""
        n, k = self.codes.shape
        w = self.codes.to(torch.float32).view(n, k // self.group, self.group) * self.scales.half().float()[..., None]
        return w.reshape(n, k)

    def exact_in_fp16(self) -> bool:
        return torch.equal(self.scales.half().float(), self.scales)


def q8_grid(t: QuantizedTensor) -> Q8Grid | None:
    """A symmetric 8-bit tensor (Q8_0) on the int8 kernel's grid, or None when it is not one, its group does not suit
    the kernel or a scale would leave fp16's range."""
    if t.bits != 8 or t.mins is not None or t.group_size not in KERNEL_GROUPS:
        return None
    if float(t.scales.abs().max()) > float(torch.finfo(torch.float16).max):
        return None
    codes = (t.codes.to(torch.int16) - 128).to(torch.int8)
    return Q8Grid(codes, t.scales, t.group_size, (t.source,))


def requantized_q8(weight: torch.Tensor, source: str, group: int = 32) -> Q8Grid | None:
    """A float matrix on the int8 kernel's grid: symmetric int8 per `group` inputs, scales rounded to fp16 first (so
    the codes are the nearest under the scale the kernel stores); None when the width is not a multiple of group."""
    n, k = weight.shape
    if k % group:
        return None
    w = weight.detach().to(torch.float32).view(n, k // group, group)
    scales = w.abs().amax(-1) / 127
    scales = torch.where(scales == 0, torch.ones_like(scales), scales).half().float()
    codes = torch.clamp(torch.round(w / scales[..., None]), -127, 127).to(torch.int8).view(n, k)
    return Q8Grid(codes, scales, group, (source,))


def layer_grids(cfg, source: dict[str, QuantizedTensor], i: int) -> dict[str, KernelGrid]:
    """Layer i's fused linears (FUSED's keys) whose parts are all 4-bit in the checkpoint."""
    out = {}
    for key, (owner, names) in FUSED.items():
        canon = [f"layers.{i}.{owner}.{n}.weight" for n in names]
        if all(c in source for c in canon):
            grid = kernel_grid([source[c] for c in canon])
            if grid is not None:
                out[key] = grid
    return out


def output_grid(cfg, source: dict[str, QuantizedTensor]) -> KernelGrid | Q8Grid | None:
    """The output layer's grid: 4-bit in the int4 kernel, symmetric 8-bit in the int8 one; None for any other."""
    t = source.get(EMBEDDING if cfg.tie_word_embeddings else OUTPUT)
    return None if t is None else kernel_grid([t]) or q8_grid(t)


def require_source(model) -> dict[str, QuantizedTensor]:
    source = getattr(model, "source_quant", None) or {}
    if not source:
        raise UnsupportedOption(f"quant 'source' keeps a quantized checkpoint's own grids, and {str(model.source)!r} "
                                "was loaded from float weights (an HF folder or a float GGUF); use quant '8da4w' (or "
                                "'8da8w' / 'fp32')")
    return source


def embedding_weight(t: QuantizedTensor):
    """A symmetric 8- or 4-bit table as a torchao tensor ExecuTorch's group-wise embedding kernels take, exactly the
    file's codes and scales; None for any other grid (it is then re-quantized, see quantize_embedding)."""
    from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import IntxUnpackedToInt8Tensor

    if t.mins is not None or t.bits not in (4, 8):
        return None
    qdata = (t.codes.to(torch.int16) - (1 << (t.bits - 1))).to(torch.int8)
    return IntxUnpackedToInt8Tensor(
        qdata=qdata, scale=t.scales.clone(), zero_point=torch.zeros_like(t.scales, dtype=torch.int8),
        target_dtype=torch.int4 if t.bits == 4 else torch.int8, block_size=(1, t.group_size), dtype=torch.float32,
        activation_quantization=None)


@dataclass
class SourceReport:
    """What the export kept from the file, and what it could not (artifact metadata 'source_grids')."""

    kept: set[str] = field(default_factory=set)
    float: list[str] = field(default_factory=list)
    requantized: dict[str, str] = field(default_factory=dict)
    scales_rounded_to_fp16: list[str] = field(default_factory=list)
    int8_kernel: list[str] = field(default_factory=list)   # 8-bit grids in edgekit's int8 kernel (linear_q8)
    shared_table: str | None = None   # a tied table stored once, read by the lookup and the head

    def as_metadata(self) -> dict:
        return {"kept": sorted(self.kept), "float": sorted(self.float), "requantized": self.requantized,
                "scales_rounded_to_fp16": self.scales_rounded_to_fp16, "int8_kernel": self.int8_kernel,
                "shared_table": self.shared_table,
                "activations": "int8 per group of the weight's group (llama.cpp's Q8_1)"}


class GridLinear(nn.Module):
    """The reference of one linear on a kernel grid: the kernel's fp16 grid, activations fake-quantized per group."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, group: int):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", None if bias is None else bias.detach().float())
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(fake_quantize_groups(x, self.group), self.weight, self.bias)
