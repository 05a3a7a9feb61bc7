"""Attention modules swapped into the decoder copy that gets exported: ExecuTorch's own LLM ops.

`llama::update_cache(value [B,T,H,D], cache [B,S,H,D], start_pos)` writes the new K/V rows in place at
`start_pos`; `llama::custom_sdpa(q [B,T,Hq,D], k_cache, v_cache [B,S,Hkv,D], start_pos, mask, dropout, is_causal)`
attends causally over rows [0, start_pos + T) with grouped-query heads, without materialising a mask or repeating
K/V (this is what optimum-executorch's --use_custom_sdpa / --use_custom_kv_cache export). Both read positions
from `input_pos[0]`: the positions of one call must be contiguous, which is what every runner sends.
"""
from __future__ import annotations

import torch
from torch import nn


def load_llm_ops() -> None:
    """Registers llama::update_cache / custom_sdpa (AOT kernels and meta functions) with torch."""
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401


class CustomSdpaAttention(nn.Module):
    """Drop-in for edgekit's CachedAttention: same cache buffers ([1, S, Hkv, D]), ExecuTorch LLM ops."""

    def __init__(self, cached: nn.Module):
        super().__init__()
        self.n_heads, self.head_dim = cached.n_heads, cached.head_dim
        self.kv_cache = cached.kv_cache  # keeps the buffer names, so the runtime sees the same mutable state
        self.max_seq_len = int(cached.kv_cache.k_cache.shape[1])

    def forward(self, q, k, v, input_pos, mask):
        t = q.shape[1]
        start_pos = input_pos[0].item()
        torch._check_is_size(start_pos)
        torch._check(start_pos < self.max_seq_len)
        torch._check(start_pos + t <= self.max_seq_len)
        torch.ops.llama.update_cache(k, self.kv_cache.k_cache, start_pos)
        torch.ops.llama.update_cache(v, self.kv_cache.v_cache, start_pos)
        y = torch.ops.llama.custom_sdpa(q, self.kv_cache.k_cache, self.kv_cache.v_cache, start_pos, None, 0.0, True)
        return y.reshape(1, t, self.n_heads * self.head_dim)


def use_custom_sdpa(decoder: nn.Module) -> int:
    """Swaps every layer's float-cache `attention.attend` for CustomSdpaAttention; returns how many were swapped."""
    from edgekit.model.graph import CachedAttention

    load_llm_ops()
    swapped = 0
    for layer in decoder.layers:
        if isinstance(layer.attention.attend, CachedAttention):
            layer.attention.attend = CustomSdpaAttention(layer.attention.attend)
            swapped += 1
    return swapped


class LinearMeanRMSNorm(nn.Module):
    """RMSNorm whose mean of squares is a [C -> 1] linear with a constant 1/C weight.

    XNNPACK delegates `mean.dim` only over the two innermost dims of 4D tensors, so edgekit's RMSNorm would stay in a
    portable kernel and split every layer into three delegate subgraphs; as a linear it stays inside XNNPACK.
    """

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.eps = norm.eps
        self.weight = norm.weight
        dim = norm.weight.shape[0]
        self.register_buffer("inv_dim", torch.full((1, dim), 1.0 / dim, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        ms = torch.nn.functional.linear(x32 * x32, self.inv_dim)
        return self.weight * (x32 * torch.rsqrt(ms + self.eps)).to(x.dtype)


def use_linear_mean_norms(decoder: nn.Module) -> int:
    """Swaps every RMSNorm of the decoder copy for LinearMeanRMSNorm; returns how many."""
    from edgekit.model.graph import RMSNorm

    targets = [(parent, name, child) for parent in decoder.modules() for name, child in parent.named_children()
               if isinstance(child, RMSNorm)]
    for parent, name, child in targets:
        setattr(parent, name, LinearMeanRMSNorm(child))
    return len(targets)
