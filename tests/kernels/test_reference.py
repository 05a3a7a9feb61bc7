"""The PyTorch reference of the ops: against plain fp32 attention, quantization error bounds, export capture."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from edgekit.kernels import Int8CachedAttention, dequantize_cache, quantize_rows, reference_attention


def plain_attention(q, k, v, input_pos):
    """Textbook fp32 attention (SDPA with an explicit causal mask, kv heads repeated), float caches."""
    rep = q.shape[2] // k.shape[2]
    mask = torch.where(torch.arange(k.shape[1])[None, :] <= input_pos[:, None], 0.0, float("-inf"))
    y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2).repeat_interleave(rep, 1),
                                       v.transpose(1, 2).repeat_interleave(rep, 1), attn_mask=mask)
    return y.transpose(1, 2)


@pytest.mark.parametrize("hq,hkv,d,t,start,s", [(4, 4, 16, 1, 9, 12), (14, 2, 64, 5, 30, 40), (7, 1, 128, 3, 0, 8)])
def test_reference_equals_plain_attention_on_dequantized_caches(hq, hkv, d, t, start, s):
    g = torch.Generator().manual_seed(1)
    kq, ks = quantize_rows(torch.randn(1, s, hkv, d, generator=g))
    vq, vs = quantize_rows(torch.randn(1, s, hkv, d, generator=g))
    q = torch.randn(1, t, hq, d, generator=g)
    pos = torch.arange(start, start + t)
    got = reference_attention(q, kq, vq, ks, vs, pos)
    want = plain_attention(q, dequantize_cache(kq, ks), dequantize_cache(vq, vs), pos)
    assert (got - want).abs().max() <= 1e-5
    # float caches (no scales) follow the same definition
    kf, vf = torch.randn(1, s, hkv, d, generator=g), torch.randn(1, s, hkv, d, generator=g)
    assert (reference_attention(q, kf, vf, None, None, pos) - plain_attention(q, kf, vf, pos)).abs().max() <= 1e-5


def test_quantize_rows_error_bound_and_zero_rows():
    x = torch.randn(3, 5, 64) * torch.logspace(-3, 2, 5)[None, :, None]
    x[1, 2] = 0.0
    q, scale = quantize_rows(x)
    assert q.dtype == torch.int8 and q.abs().max() <= 127
    err = (q.float() * scale.unsqueeze(-1) - x).abs()
    assert (err <= scale.unsqueeze(-1) / 2 * (1 + 1e-6)).all()  # symmetric rounding: at most half a step
    assert scale[1, 2] == 1.0 and (q[1, 2] == 0).all()


def test_int8_attention_tracks_fp32_attention_module():
    """Int8CachedAttention vs the decoder's fp32 CachedAttention over a prefill + decode steps: close outputs."""
    from edgekit.model.graph import KVCache

    hq, hkv, d, s = 8, 2, 64, 64
    int8 = Int8CachedAttention(hq, hkv, d, s)
    fp32 = KVCache(s, hkv, d, torch.float32)
    g = torch.Generator().manual_seed(2)
    for start, t in ((0, 20), (20, 1), (21, 1), (22, 7)):
        q, k, v = (torch.randn(1, t, h, d, generator=g) for h in (hq, hkv, hkv))
        pos = torch.arange(start, start + t)
        got = int8(q, k, v, pos, None)
        kc, vc = fp32.update(pos, k, v)
        want = plain_attention(q, kc, vc, pos).reshape(1, t, hq * d)
        assert (got - want).abs().max() < 0.05  # int8 KV: ~1/254 relative error per element
    ratio = int8.cache_bytes() / (2 * s * hkv * d * 4)
    assert math.isclose(ratio, (d + 4) / (4 * d)) and ratio < 0.28


def test_use_int8_kv_cache_swaps_every_layer_and_export_keeps_one_node_per_op(tiny_model):
    from edgekit.kernels import use_int8_kv_cache

    model = tiny_model("qwen2")
    dec = use_int8_kv_cache(model.decoder(32))
    assert all(isinstance(layer.attention.attend, Int8CachedAttention) for layer in dec.layers)
    with torch.no_grad():
        ep = torch.export.export(dec, (torch.zeros(1, 3, dtype=torch.long), torch.arange(3)), strict=False)
    targets = [n.target for n in ep.graph.nodes if n.op == "call_function"]
    n_layers = len(dec.layers)
    assert targets.count(torch.ops.edgekit.attention.default) == n_layers
    assert targets.count(torch.ops.edgekit.update_int8_cache.default) == 2 * n_layers
    dec.reset_cache()
    assert all(not b.any() for name, b in dec.named_buffers() if "cache" in name)
