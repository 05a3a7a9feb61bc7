"""`edgekit::linear_q4`: the 8da4w linear as one op that edgekit's compiled kernel runs
(edgekit/kernels/csrc/linear_q4.h).

    edgekit::linear_q4(Tensor x, Tensor packed, Tensor scales, Tensor rowsum, Tensor? bias, int group_size,
                       int out_features, Tensor? mins=None) -> Tensor

Meaning (the same as torchao's 8da4w linear, which the eager reference graph runs): x [..., K] fp32 is quantized per
token to asymmetric int8 (torchao's int8_asym_per_token) and dequantized, the weight is int4 codes [N, K] times one
bf16 or fp16 scale per group of `group_size` inputs (plus, with `mins`, one minimum per group: codes 0..15,
w = s * code + m, GGUF's Q4_1 grid), y = x_fq @ w.T + bias. The weight is stored in the kernel's tiled layout
(see edgekit/kernels/q4.py: uint8 packed [N_pad * K / 2], scales [N_pad * K / G], mins like the scales, fp32 rowsum
[N_pad]). The fused forms take the same trailing `Tensor? mins=None`.

Why an own op: a decode step streams every weight once, and XNNPACK's int4 GEMM turned ~22-27 GB/s of the machine's
~30 into results; this kernel streams one 16-row tile after another (one 64-byte load feeds 16 rows), and the fused
forms (fused_block.py) remove the norm / rotary / SiLU / residual ops between the linears. Decode 1.1-1.25x and
prefill 1.4-1.6x optimum-executorch's .pte on the 0.5B model (benchmarks/RESULTS.md).
"""
from __future__ import annotations

import torch
from torch import nn

from edgekit.kernels.ops import register_op
from edgekit.kernels.q4 import (  # noqa: F401  (the layout and the op's meaning live in the core)
    PACK_ROWS,
    TILE,
    fake_quantize_activations,
    pack,
    padded_rows,
    reference_linear_q4,
    unpack,
)

_lib = torch.library.Library("edgekit", "FRAGMENT")
_lib.define("linear_q4(Tensor x, Tensor packed, Tensor scales, Tensor rowsum, Tensor? bias, int group_size, "
            "int out_features, Tensor? mins=None, bool act_per_group=False) -> Tensor")
_lib.define("linear_q4.out(Tensor x, Tensor packed, Tensor scales, Tensor rowsum, Tensor? bias, int group_size, "
            "int out_features, Tensor? mins=None, bool act_per_group=False, *, Tensor(a!) out) -> Tensor(a!)")
_FUSED = ("Tensor x, Tensor packed, Tensor scales, Tensor rowsum, Tensor? bias, int group_size, int out_features, "
          "Tensor? norm_weight, float norm_eps, bool swiglu, Tensor? residual, Tensor? mins=None, "
          "bool act_per_group=False")
_lib.define(f"fused_linear_q4({_FUSED}) -> Tensor")
_lib.define(f"fused_linear_q4.out({_FUSED}, *, Tensor(a!) out) -> Tensor(a!)")
_QKV = ("Tensor x, Tensor packed, Tensor scales, Tensor rowsum, Tensor? bias, int group_size, Tensor norm_weight, "
        "float norm_eps, Tensor cos, Tensor sin, int q_heads, int kv_heads, int head_dim, Tensor? q_norm_weight, "
        "Tensor? k_norm_weight, Tensor? mins=None, bool act_per_group=False")
_lib.define(f"qkv_rope_q4({_QKV}) -> Tensor")
_lib.define(f"qkv_rope_q4.out({_QKV}, *, Tensor(a!) out) -> Tensor(a!)")


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """edgekit.model.graph.RMSNorm's arithmetic (fp32)."""
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps))


def et_linear_q4(x, packed, scales, rowsum, bias, group_size, out_features, mins=None,
                 act_per_group=False) -> torch.Tensor:
    """edgekit::linear_q4's reference: activations per token (8da4w), or per group of `group_size` (act_per_group)."""
    return reference_linear_q4(x, packed, scales, rowsum, bias, group_size, out_features, act_per_group, mins=mins)


def reference_fused_linear_q4(x, packed, scales, rowsum, bias, group_size, out_features, norm_weight, norm_eps,
                              swiglu, residual, mins=None, act_per_group=False) -> torch.Tensor:
    """silu(x[..., :K]) * x[..., K:] (swiglu), then RMSNorm (norm_weight), then the 8da4w linear, then + residual."""
    if swiglu:
        gate, up = x.chunk(2, dim=-1)
        x = nn.functional.silu(gate) * up
    if norm_weight is not None:
        x = rms_norm(x, norm_weight, norm_eps)
    y = reference_linear_q4(x, packed, scales, rowsum, bias, group_size, out_features, act_per_group, mins=mins)
    return y if residual is None else y + residual


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def reference_qkv_rope_q4(x, packed, scales, rowsum, bias, group_size, norm_weight, norm_eps, cos, sin, q_heads,
                          kv_heads, head_dim, q_norm_weight, k_norm_weight, mins=None,
                          act_per_group=False) -> torch.Tensor:
    """RMSNorm, then the [q | k | v] projection, then per-head RMSNorm of q and k (Qwen3) and rotary on q and k, as
    edgekit.model.graph.Attention computes them; returns [..., (Hq + 2 Hkv) * D]."""
    n = (q_heads + 2 * kv_heads) * head_dim
    y = reference_linear_q4(rms_norm(x, norm_weight, norm_eps), packed, scales, rowsum, bias, group_size, n,
                            act_per_group, mins=mins)
    lead = y.shape[:-1]
    heads = y.reshape(*lead, q_heads + 2 * kv_heads, head_dim)
    q, k, v = heads.split((q_heads, kv_heads, kv_heads), dim=-2)
    if q_norm_weight is not None:
        q, k = rms_norm(q, q_norm_weight, norm_eps), rms_norm(k, k_norm_weight, norm_eps)
    c = cos.reshape(*lead, 1, head_dim)
    s = sin.reshape(*lead, 1, head_dim)
    q, k = q * c + rotate_half(q) * s, k * c + rotate_half(k) * s
    return torch.cat((q, k, v), dim=-2).reshape(*lead, n)


def _fused_fake(x, packed, scales, rowsum, bias, group_size, out_features, norm_weight, norm_eps, swiglu, residual,
                mins=None, act_per_group=False):
    return x.new_empty((*x.shape[:-1], out_features), dtype=torch.float32)


def _qkv_fake(x, packed, scales, rowsum, bias, group_size, norm_weight, norm_eps, cos, sin, q_heads, kv_heads,
              head_dim, q_norm_weight, k_norm_weight, mins=None, act_per_group=False):
    return x.new_empty((*x.shape[:-1], (q_heads + 2 * kv_heads) * head_dim), dtype=torch.float32)


def _linear_q4_fake(x, packed, scales, rowsum, bias, group_size, out_features, mins=None, act_per_group=False):
    return x.new_empty((*x.shape[:-1], out_features), dtype=torch.float32)


register_op(_lib, "fused_linear_q4", reference_fused_linear_q4, _fused_fake)
register_op(_lib, "qkv_rope_q4", reference_qkv_rope_q4, _qkv_fake)
register_op(_lib, "linear_q4", et_linear_q4, _linear_q4_fake)


class Q4Linear(nn.Module):
    """An 8da4w linear whose weight lives in the kernel's layout; forward is one edgekit::linear_q4 call.

    codes / scales / group / mins / scale_dtype as q4.pack takes them: signed codes without mins, unsigned codes
    0..15 with mins (w = scales * codes + mins, GGUF's Q4_1 grid; fp16 keeps a GGUF's d and m exactly).
    act_per_group: activations quantized per group of `group` inputs (llama.cpp's Q8_1) instead of per token."""

    def __init__(self, codes: torch.Tensor, scales: torch.Tensor, group: int, bias: torch.Tensor | None,
                 mins: torch.Tensor | None = None, scale_dtype: torch.dtype = torch.bfloat16,
                 act_per_group: bool = False):
        super().__init__()
        self.out_features, self.in_features = codes.shape
        self.group_size = group
        self.act_per_group = act_per_group
        packed, s16, rowsum, *tiled_mins = pack(codes, scales, group, mins, scale_dtype)
        self.register_buffer("packed", packed)
        self.register_buffer("scales", s16)
        self.register_buffer("rowsum", rowsum)
        self.register_buffer("mins", tiled_mins[0] if tiled_mins else None)
        self.register_buffer("bias", None if bias is None else bias.detach().to(torch.float32).clone())

    @classmethod
    def from_quantized(cls, t, bias: torch.Tensor | None = None, scale_dtype: torch.dtype | None = None) -> Q4Linear:
        """From a 4-bit quantized tensor in edgekit.quant's convention (codes uint8 0..15, scales, mins or None,
        bits, group_size); scale_dtype None: the one that holds every scale and min exactly, else fp16."""
        from edgekit.kernels.q4 import lossless_scale_dtype

        if t.bits != 4:
            raise ValueError(f"edgekit::linear_q4 holds 4-bit weights, got {t.bits} bits")
        codes = t.codes if t.mins is not None else t.codes.to(torch.int16).sub(8).to(torch.int8)
        return cls(codes, t.scales, t.group_size, bias, t.mins,
                   scale_dtype or lossless_scale_dtype(t.scales, t.mins) or torch.float16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.edgekit.linear_q4(x, self.packed, self.scales, self.rowsum, self.bias, self.group_size,
                                           self.out_features, *trailing_args(self.mins, self.act_per_group))


def trailing_args(mins: torch.Tensor | None, act_per_group: bool) -> tuple:
    """The ops' optional trailing (mins, act_per_group), only as far as they differ from the defaults: graphs without
    minimums or per-group activations keep the op's original arity."""
    if act_per_group:
        return mins, True
    return () if mins is None else (mins,)


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
