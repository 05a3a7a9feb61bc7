"""The Core ML adaptation of the decoder: KV cache as fp16 states written with slice updates.

coremltools cannot convert `index_copy_` (the core cache write), but converts `cache[:, :, s:s+T] = k` into MIL
`slice_update` + `coreml_update_state`. Attention stays `F.scaled_dot_product_attention` without an explicit `scale`,
which coremltools 9 lowers to the iOS 18 fused `scaled_dot_product_attention` op (its implicit scale is 1/sqrt(D),
the same as torch's default, so q needs no pre-scaling; passing `scale=` would force the decomposed form).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CACHE_DTYPE = torch.float16  # Core ML states hold fp16 only


class StateCacheAttention(nn.Module):
    """Cache buffers [1, Hkv, S, D] (head-major: no transpose of the whole cache per step), fp16, written at
    positions input_pos[0] .. input_pos[0]+T-1 (prefill and decode always write consecutive positions)."""

    def __init__(self, n_heads: int, n_kv_heads: int, head_dim: int, max_seq_len: int):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        shape = (1, n_kv_heads, max_seq_len, head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=CACHE_DTYPE, device="cpu"), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=CACHE_DTYPE, device="cpu"), persistent=False)

    def forward(self, q, k, v, input_pos, mask):
        """q: [1,T,Hq,D], k/v: [1,T,Hkv,D], input_pos: [T] consecutive, mask: [T,S] additive -> [1,T,Hq*D]."""
        t = q.shape[1]
        size = self.k_cache.shape[2]
        start = input_pos[0].item()
        torch._check_is_size(start)
        torch._check(start + t <= size)
        self.k_cache[:, :, start:start + t] = k.transpose(1, 2).to(CACHE_DTYPE)
        self.v_cache[:, :, start:start + t] = v.transpose(1, 2).to(CACHE_DTYPE)
        rep = self.n_heads // self.n_kv_heads
        shape = (1, self.n_heads, size, self.head_dim)
        k_all = self.k_cache.to(q.dtype)[:, :, None].expand(1, self.n_kv_heads, rep, size, self.head_dim).reshape(shape)
        v_all = self.v_cache.to(q.dtype)[:, :, None].expand(1, self.n_kv_heads, rep, size, self.head_dim).reshape(shape)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k_all, v_all, attn_mask=mask)
        return y.transpose(1, 2).reshape(1, t, self.n_heads * self.head_dim)


def use_state_cache(decoder: nn.Module) -> nn.Module:
    """Swap every layer's `attention.attend` of `decoder` (a copy the caller owns) for StateCacheAttention."""
    cfg = decoder.config
    for layer in decoder.layers:
        layer.attention.attend = StateCacheAttention(cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                                                     decoder.max_seq_len)
    return decoder


class ScaledRMSNorm(nn.Module):
    """RMSNorm that cannot overflow fp16: x is divided by its max |x| before squaring (the mean of squares is then in
    [1/n, 1]); algebraically the same function as the core RMSNorm. In fp16, x² overflows above |x| ≈ 256, which
    real models' residual streams exceed (SmolLM2-135M reaches ~290)."""

    def __init__(self, weight: torch.Tensor, eps: float):
        super().__init__()
        self.weight, self.eps = weight, eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        m = torch.clamp(x32.abs().amax(-1, keepdim=True), min=1e-4)
        xs = x32 / m
        y = xs * torch.rsqrt(xs.pow(2).mean(-1, keepdim=True) + (self.eps / m) / m)
        return self.weight * y.to(x.dtype)


def use_scaled_norms(decoder: nn.Module) -> nn.Module:
    """Swap every RMSNorm of `decoder` (a copy the caller owns) for ScaledRMSNorm (same weights, shared)."""
    from edgekit.model.graph import RMSNorm

    for parent in list(decoder.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, RMSNorm):
                setattr(parent, name, ScaledRMSNorm(child.weight, child.eps))
    return decoder
