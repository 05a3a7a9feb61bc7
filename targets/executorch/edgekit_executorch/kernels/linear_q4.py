"""`edgekit::linear_q4`: the 8da4w linear as one op that edgekit's compiled kernel runs (csrc/linear_q4.h).

    edgekit::linear_q4(Tensor x, Tensor packed, Tensor scales, Tensor rowsum, Tensor? bias, int group_size,
                       int out_features) -> Tensor

Meaning (the same as torchao's 8da4w linear, which the eager reference graph runs): x [..., K] fp32 is quantized per
token to asymmetric int8 (torchao's int8_asym_per_token) and dequantized, the weight is int4 codes [N, K] times one
bf16 scale per group of `group_size` inputs, y = x_fq @ w.T + bias. The weight is stored in the kernel's tiled layout
(see linear_q4.h: uint8 packed [N_pad * K / 2], bf16 scales [N_pad * K / G], fp32 rowsum [N_pad]).

Why an own op: a decode step streams every weight once, and XNNPACK's int4 GEMM turned ~22-27 GB/s of the machine's
~30 into results; this kernel streams one 16-row tile after another (one 64-byte load feeds 16 rows), and the fused
forms (fused_block.py) remove the norm / rotary / SiLU / residual ops between the linears. Decode 1.1-1.25x and
prefill 1.4-1.6x optimum-executorch's .pte on the 0.5B model (benchmarks/RESULTS.md).
"""
from __future__ import annotations

import torch
from torch import nn

TILE = 16

_lib = torch.library.Library("edgekit", "FRAGMENT")
_lib.define("linear_q4(Tensor x, Tensor packed, Tensor scales, Tensor rowsum, Tensor? bias, int group_size, "
            "int out_features) -> Tensor")
_lib.define("linear_q4.out(Tensor x, Tensor packed, Tensor scales, Tensor rowsum, Tensor? bias, int group_size, "
            "int out_features, *, Tensor(a!) out) -> Tensor(a!)")
_FUSED = ("Tensor x, Tensor packed, Tensor scales, Tensor rowsum, Tensor? bias, int group_size, int out_features, "
          "Tensor? norm_weight, float norm_eps, bool swiglu, Tensor? residual")
_lib.define(f"fused_linear_q4({_FUSED}) -> Tensor")
_lib.define(f"fused_linear_q4.out({_FUSED}, *, Tensor(a!) out) -> Tensor(a!)")
_QKV = ("Tensor x, Tensor packed, Tensor scales, Tensor rowsum, Tensor? bias, int group_size, Tensor norm_weight, "
        "float norm_eps, Tensor cos, Tensor sin, int q_heads, int kv_heads, int head_dim, Tensor? q_norm_weight, "
        "Tensor? k_norm_weight")
_lib.define(f"qkv_rope_q4({_QKV}) -> Tensor")
_lib.define(f"qkv_rope_q4.out({_QKV}, *, Tensor(a!) out) -> Tensor(a!)")


def padded_rows(n: int) -> int:
    return (n + TILE - 1) // TILE * TILE


PACK_ROWS = 4096  # rows packed per chunk: the fp32 / int16 temporaries of a 150k-row output layer stay ~30 MB


def pack(codes: torch.Tensor, scales: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """int4 codes [N, K] (int8 in -8..7) and scales [N, K / group] -> (packed uint8, scales bf16, rowsum fp32) in the
    kernel's tiled layout; rows are padded to a multiple of 16 with zero codes and zero scales."""
    n, k = codes.shape
    if k % group or group % 8 or scales.shape != (n, k // group):
        raise ValueError(f"codes {tuple(codes.shape)} / scales {tuple(scales.shape)} do not fit group {group}")
    if codes.min() < -8 or codes.max() > 7:
        raise ValueError("int4 codes must lie in -8..7")
    npad = padded_rows(n)
    packed = torch.empty(npad * k // 2, dtype=torch.uint8)
    tiled_scales = torch.empty(npad * (k // group), dtype=torch.bfloat16)
    rowsum = torch.zeros(npad, dtype=torch.float32)
    for r0 in range(0, npad, PACK_ROWS):
        r1 = min(npad, r0 + PACK_ROWS)
        rows, real = r1 - r0, max(0, min(n, r1) - r0)
        s16 = torch.zeros(rows, k // group, dtype=torch.bfloat16)
        s16[:real] = scales[r0:r0 + real].to(torch.bfloat16)
        nib = torch.full((rows, k), 8, dtype=torch.uint8)
        nib[:real] = codes[r0:r0 + real].add(8).to(torch.uint8)
        # [tiles, 16 rows, K/8 vectors, 2 halves, 4 bytes] -> [tiles, K/8 vectors, 16 rows, 4 bytes] per half
        v = nib.view(rows // TILE, TILE, k // 8, 2, 4).permute(0, 2, 1, 3, 4)
        packed[r0 * k // 2:r1 * k // 2] = (v[..., 0, :] | (v[..., 1, :] << 4)).reshape(-1)
        tiled_scales[r0 * (k // group):r1 * (k // group)] = s16.view(rows // TILE, TILE, k // group).transpose(1, 2) \
            .reshape(-1)
        if real:
            deq = codes[r0:r0 + real].to(torch.float32).view(real, k // group, group) * \
                s16[:real].to(torch.float32).unsqueeze(-1)
            rowsum[r0:r0 + real] = deq.sum(dim=(1, 2))
    return packed, tiled_scales, rowsum


def unpack(packed: torch.Tensor, scales: torch.Tensor, group: int, n: int, k: int) -> torch.Tensor:
    """The fp32 weight [N, K] (codes times scales) that a packed weight holds."""
    npad = padded_rows(n)
    v = packed.view(npad // TILE, k // 8, TILE, 4)
    nib = torch.stack((v & 0x0F, v >> 4), dim=3)              # [tiles, K/8, 16, 2, 4]
    codes = nib.permute(0, 2, 1, 3, 4).reshape(npad, k).to(torch.int16) - 8
    s = scales.view(npad // TILE, k // group, TILE).transpose(1, 2).reshape(npad, k // group).to(torch.float32)
    w = codes.to(torch.float32).view(npad, k // group, group) * s.unsqueeze(-1)
    return w.view(npad, k)[:n]


def fake_quantize_activations(x: torch.Tensor) -> torch.Tensor:
    """torchao's int8_asym_per_token quantize + dequantize of x [..., K] (fp32), the op's activation semantics."""
    x = x.to(torch.float32)
    lo = torch.clamp(x.amin(dim=-1, keepdim=True), max=0.0)
    hi = torch.clamp(x.amax(dim=-1, keepdim=True), min=0.0)
    scale = torch.clamp((hi - lo) / 255.0, min=torch.finfo(torch.float32).smallest_normal)
    zp = torch.clamp(-128 - torch.round(lo / scale), -128, 127)
    q = torch.clamp(torch.round(x * (1.0 / scale)) + zp, -128, 127)
    return (q - zp) * scale


def reference_linear_q4(x, packed, scales, rowsum, bias, group_size: int, out_features: int) -> torch.Tensor:
    w = unpack(packed, scales, group_size, out_features, x.shape[-1])
    return nn.functional.linear(fake_quantize_activations(x), w, bias)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """edgekit.model.graph.RMSNorm's arithmetic (fp32)."""
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps))


def reference_fused_linear_q4(x, packed, scales, rowsum, bias, group_size, out_features, norm_weight, norm_eps,
                              swiglu, residual) -> torch.Tensor:
    """silu(x[..., :K]) * x[..., K:] (swiglu), then RMSNorm (norm_weight), then the 8da4w linear, then + residual."""
    if swiglu:
        gate, up = x.chunk(2, dim=-1)
        x = nn.functional.silu(gate) * up
    if norm_weight is not None:
        x = rms_norm(x, norm_weight, norm_eps)
    y = reference_linear_q4(x, packed, scales, rowsum, bias, group_size, out_features)
    return y if residual is None else y + residual


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def reference_qkv_rope_q4(x, packed, scales, rowsum, bias, group_size, norm_weight, norm_eps, cos, sin, q_heads,
                          kv_heads, head_dim, q_norm_weight, k_norm_weight) -> torch.Tensor:
    """RMSNorm, then the [q | k | v] projection, then per-head RMSNorm of q and k (Qwen3) and rotary on q and k, as
    edgekit.model.graph.Attention computes them; returns [..., (Hq + 2 Hkv) * D]."""
    n = (q_heads + 2 * kv_heads) * head_dim
    y = reference_linear_q4(rms_norm(x, norm_weight, norm_eps), packed, scales, rowsum, bias, group_size, n)
    lead = y.shape[:-1]
    heads = y.reshape(*lead, q_heads + 2 * kv_heads, head_dim)
    q, k, v = heads.split((q_heads, kv_heads, kv_heads), dim=-2)
    if q_norm_weight is not None:
        q, k = rms_norm(q, q_norm_weight, norm_eps), rms_norm(k, k_norm_weight, norm_eps)
    c = cos.reshape(*lead, 1, head_dim)
    s = sin.reshape(*lead, 1, head_dim)
    q, k = q * c + rotate_half(q) * s, k * c + rotate_half(k) * s
    return torch.cat((q, k, v), dim=-2).reshape(*lead, n)


@torch.library.impl(_lib, "fused_linear_q4", "CompositeExplicitAutograd")
def _fused_cpu(*args):
    return reference_fused_linear_q4(*args)


@torch.library.impl(_lib, "fused_linear_q4.out", "CompositeExplicitAutograd")
def _fused_out_cpu(*args, out):
    out.copy_(reference_fused_linear_q4(*args))
    return out


@torch.library.register_fake("edgekit::fused_linear_q4")
def _fused_fake(x, packed, scales, rowsum, bias, group_size, out_features, norm_weight, norm_eps, swiglu, residual):
    return x.new_empty((*x.shape[:-1], out_features), dtype=torch.float32)


@torch.library.register_fake("edgekit::fused_linear_q4.out")
def _fused_out_fake(*args, out):
    return out


@torch.library.impl(_lib, "qkv_rope_q4", "CompositeExplicitAutograd")
def _qkv_cpu(*args):
    return reference_qkv_rope_q4(*args)


@torch.library.impl(_lib, "qkv_rope_q4.out", "CompositeExplicitAutograd")
def _qkv_out_cpu(*args, out):
    out.copy_(reference_qkv_rope_q4(*args))
    return out


@torch.library.register_fake("edgekit::qkv_rope_q4")
def _qkv_fake(x, packed, scales, rowsum, bias, group_size, norm_weight, norm_eps, cos, sin, q_heads, kv_heads,
              head_dim, q_norm_weight, k_norm_weight):
    return x.new_empty((*x.shape[:-1], (q_heads + 2 * kv_heads) * head_dim), dtype=torch.float32)


@torch.library.register_fake("edgekit::qkv_rope_q4.out")
def _qkv_out_fake(*args, out):
    return out


@torch.library.impl(_lib, "linear_q4", "CompositeExplicitAutograd")
def _linear_q4_cpu(x, packed, scales, rowsum, bias, group_size, out_features):
    return reference_linear_q4(x, packed, scales, rowsum, bias, group_size, out_features)


@torch.library.impl(_lib, "linear_q4.out", "CompositeExplicitAutograd")
def _linear_q4_out_cpu(x, packed, scales, rowsum, bias, group_size, out_features, *, out):
    out.copy_(reference_linear_q4(x, packed, scales, rowsum, bias, group_size, out_features))
    return out


@torch.library.register_fake("edgekit::linear_q4")
def _linear_q4_fake(x, packed, scales, rowsum, bias, group_size, out_features):
    return x.new_empty((*x.shape[:-1], out_features), dtype=torch.float32)


@torch.library.register_fake("edgekit::linear_q4.out")
def _linear_q4_out_fake(x, packed, scales, rowsum, bias, group_size, out_features, *, out):
    return out


class Q4Linear(nn.Module):
    """An 8da4w linear whose weight lives in the kernel's layout; forward is one edgekit::linear_q4 call."""

    def __init__(self, codes: torch.Tensor, scales: torch.Tensor, group: int, bias: torch.Tensor | None):
        super().__init__()
        self.out_features, self.in_features = codes.shape
        self.group_size = group
        packed, s16, rowsum = pack(codes, scales, group)
        self.register_buffer("packed", packed)
        self.register_buffer("scales", s16)
        self.register_buffer("rowsum", rowsum)
        self.register_buffer("bias", None if bias is None else bias.detach().to(torch.float32).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.edgekit.linear_q4(x, self.packed, self.scales, self.rowsum, self.bias, self.group_size,
                                           self.out_features)


def use_q4_linears(decoder: nn.Module) -> int:
    """Replaces every 8da4w linear (torchao IntxUnpackedToInt8Tensor, int4, int8 dynamic activations) with a Q4Linear
    holding the same codes and scales; returns how many. Other linears are left alone."""
    swaps = []
    for parent in decoder.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Linear) and is_8da4w(child.weight):
                swaps.append((parent, name, child))
    for parent, name, child in swaps:
        w = child.weight
        group = int(w.block_size[-1])
        scales = w.scale.to(torch.float32).reshape(w.qdata.shape[0], -1)
        setattr(parent, name, Q4Linear(w.qdata, scales, group, child.bias))
    return len(swaps)


def is_8da4w(weight) -> bool:
    return (getattr(weight, "target_dtype", None) == torch.int4 and getattr(weight, "activation_quantization", None)
            is not None and getattr(weight, "block_size", (0, 0))[-1] < weight.shape[-1])
