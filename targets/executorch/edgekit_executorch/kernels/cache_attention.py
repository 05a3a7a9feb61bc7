"""`edgekit::qkv_cache_attention`: a fused layer's cache write and attention as one op, straight from the fused q/k/v
projection (edgekit::qkv_rope_q4's output).

    edgekit::qkv_cache_attention(Tensor qkv, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor input_pos, int q_heads,
                                 int kv_heads) -> Tensor

qkv [1, T, (Hq + 2 Hkv) * D] holds each token's q heads, then its Hkv k heads, then its Hkv v heads (rotary already
applied). The k and v heads of token t are written into the fp32 caches [1, S, Hkv, D] at position input_pos[t];
then every q head attends causally over the cache (edgekit::attention's arithmetic: row t sees positions
<= input_pos[t], query head h reads kv head h / (Hq / Hkv)). Returns [1, T, Hq * D].

Why one op: the unfused layer sliced q, k and v out of the projection (three copies), wrote the caches with two
llama::update_cache calls (each behind its own start-position read) and then ran edgekit::attention: six calls per
layer where this is one, and the attention's q is read in place from the projection.
"""
from __future__ import annotations

import torch

from edgekit.kernels.ops import reference_attention, register_op

_lib = torch.library.Library("edgekit", "FRAGMENT")
_ARGS = "Tensor qkv, Tensor(a!) k_cache, Tensor(b!) v_cache, Tensor input_pos, int q_heads, int kv_heads"
_lib.define(f"qkv_cache_attention({_ARGS}) -> Tensor")
_lib.define(f"qkv_cache_attention.out({_ARGS}, *, Tensor(c!) out) -> Tensor(c!)")


def _check(qkv, k_cache, v_cache, input_pos, q_heads, kv_heads) -> None:
    torch._check(k_cache.dim() == 4 and k_cache.shape == v_cache.shape and k_cache.shape[0] == 1,
                 lambda: f"caches must be [1, S, Hkv, D] and equal, got {tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    torch._check(k_cache.dtype == torch.float32 and v_cache.dtype == torch.float32 and qkv.dtype == torch.float32,
                 lambda: f"qkv and the caches must be float32, got {qkv.dtype}, {k_cache.dtype}, {v_cache.dtype}")
    torch._check(q_heads > 0 and kv_heads > 0 and q_heads % kv_heads == 0 and k_cache.shape[2] == kv_heads,
                 lambda: f"q_heads {q_heads} must be a multiple of kv_heads {kv_heads} (the caches hold "
                         f"{k_cache.shape[2]})")
    d = k_cache.shape[3]
    torch._check(qkv.dim() == 3 and qkv.shape[0] == 1 and qkv.shape[2] == (q_heads + 2 * kv_heads) * d,
                 lambda: f"qkv must be [1, T, {(q_heads + 2 * kv_heads) * d}], got {tuple(qkv.shape)}")
    torch._check(input_pos.dim() == 1 and input_pos.shape[0] == qkv.shape[1],
                 lambda: f"input_pos must be [T] with T = {qkv.shape[1]}, got {tuple(input_pos.shape)}")


def reference_qkv_cache_attention(qkv: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                                  input_pos: torch.Tensor, q_heads: int, kv_heads: int) -> torch.Tensor:
    """Plain PyTorch: the definition the kernel is tested against (writes the caches in place)."""
    _check(qkv, k_cache, v_cache, input_pos, q_heads, kv_heads)
    t, d = qkv.shape[1], k_cache.shape[3]
    heads = qkv.reshape(1, t, q_heads + 2 * kv_heads, d)
    q, k, v = heads.split([q_heads, kv_heads, kv_heads], dim=2)
    k_cache.index_copy_(1, input_pos, k.contiguous())
    v_cache.index_copy_(1, input_pos, v.contiguous())
    return reference_attention(q.contiguous(), k_cache, v_cache, None, None, input_pos).reshape(1, t, q_heads * d)


def _fake(qkv, k_cache, v_cache, input_pos, q_heads, kv_heads):
    _check(qkv, k_cache, v_cache, input_pos, q_heads, kv_heads)
    return qkv.new_empty((1, qkv.shape[1], q_heads * k_cache.shape[3]), dtype=torch.float32)


register_op(_lib, "qkv_cache_attention", reference_qkv_cache_attention, _fake)
