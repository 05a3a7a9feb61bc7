"""The export-friendly decoder: forward(tokens[1,T], input_pos[T]) -> logits, static KV cache of max_seq_len.

One file, top to bottom (gpt-fast style). Targets adapt it by swapping modules, never by branching here:
every `Attention` delegates cache writing + attention to its `attend` module (a `CachedAttention` by default),
which a target may replace with its own (custom SDPA ops, explicit cache IO, slice updates, int8 caches).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from edgekit.model.config import ModelConfig

MASKED = -1e4  # additive mask value: finite so fp16 targets stay NaN-free, far below any real score after softmax


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_tables(cfg: ModelConfig, max_seq_len: int, local: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape [max_seq_len, head_dim] in the half-split (rotate_half) layout HF uses; `local`: the
    sliding-window layers' tables (their own base, no scaling)."""
    inv_freq = rope_inv_freq(cfg, local)
    t = torch.arange(max_seq_len, dtype=torch.int64, device="cpu").float()
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def rope_inv_freq(cfg: ModelConfig, local: bool = False) -> torch.Tensor:
    """float32 [head_dim / 2]: the rotary frequencies (llama3 scaling and GGUF frequency factors applied); position p
    turns by p * inv_freq. `local`: the sliding-window layers' frequencies (Gemma 3: base 10,000, unscaled)."""
    d = cfg.head_dim
    exponents = torch.arange(0, d, 2, dtype=torch.int64, device="cpu").float() / d
    if local:
        return 1.0 / (cfg.rope_local_theta ** exponents)
    inv_freq = 1.0 / (cfg.rope_theta ** exponents)
    if cfg.rope_scaling is not None:
        inv_freq = _llama3_scaled(inv_freq, cfg)
    if cfg.rope_freq_factors is not None:
        inv_freq = inv_freq / torch.tensor(cfg.rope_freq_factors, dtype=torch.float32, device="cpu")
    return inv_freq


def _llama3_scaled(inv_freq: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    rs = cfg.rope_scaling
    assert rs is not None
    low_wavelen = rs.original_max_position_embeddings / rs.low_freq_factor
    high_wavelen = rs.original_max_position_embeddings / rs.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / rs.factor, inv_freq)
    smooth = (rs.original_max_position_embeddings / wavelen - rs.low_freq_factor) / (
        rs.high_freq_factor - rs.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / rs.factor + smooth * scaled
    is_medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[..., D] -> [..., D]: (-x[D/2:], x[:D/2]), the half-split layout HF uses."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Rope(nn.Module):
    """Rotary embedding of x [1, T, H, D] with cos/sin [1, T, 1, D] (shaped once per forward by the Decoder).
    A target may swap it (ExecuTorch computes rotate_half as a constant linear, which XNNPACK keeps)."""

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return x * cos + rotate_half(x) * sin


class KVCache(nn.Module):
    """Static cache [1, max_seq_len, n_kv_heads, head_dim], written in place at input_pos."""

    def __init__(self, max_seq_len: int, n_kv_heads: int, head_dim: int, dtype: torch.dtype):
        super().__init__()
        shape = (1, max_seq_len, n_kv_heads, head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype, device="cpu"), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype, device="cpu"), persistent=False)

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.k_cache.index_copy_(1, input_pos, k)
        self.v_cache.index_copy_(1, input_pos, v)
        return self.k_cache, self.v_cache


class CachedAttention(nn.Module):
    """Writes new K/V into the cache, then attends over the whole cache with the additive causal mask."""

    def __init__(self, cfg: ModelConfig, max_seq_len: int, dtype: torch.dtype):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.scale = cfg.softmax_scale
        self.kv_cache = KVCache(max_seq_len, cfg.num_kv_heads, cfg.head_dim, dtype)

    def forward(self, q, k, v, input_pos, mask):
        """q: [1,T,Hq,D], k/v: [1,T,Hkv,D], mask: [T,S] additive -> [1,T,Hq*D]."""
        k_all, v_all = self.kv_cache.update(input_pos, k, v)
        rep = self.n_heads // self.n_kv_heads
        q = q.transpose(1, 2)
        k_all = k_all.transpose(1, 2).repeat_interleave(rep, dim=1)
        v_all = v_all.transpose(1, 2).repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=mask, scale=self.scale)
        return y.transpose(1, 2).reshape(1, q.shape[2], self.n_heads * self.head_dim)


class RingCachedAttention(nn.Module):
    """Sliding-window attention over a ring of `slots` cache rows, position p in row p % slots: a layer that sees
    only the last `window` positions keeps about that many, whatever the context length.

    The new K/V are attended together with the cache as it was (so a prefill longer than the window is exact: its
    first tokens are attended before the ring drops them), then the last min(T, slots) of them are written; the
    earlier ones go to one spare row past the ring that is never attended, so the write has no length-dependent
    shape (torch.export's dynamic length would otherwise need guards on min(T, slots)).
    `cache_fill` holds each row's position + 1 (0: empty), so resetting every cache buffer to zero empties it. Rows at
    or after the call's first position are stale (the caller went back) and masked; the ring holds
    config.RING_REWIND rows beyond the window, so going back that far (a rejected speculative draft) stays exact."""

    def __init__(self, cfg: ModelConfig, slots: int, dtype: torch.dtype):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.scale, self.window, self.slots = cfg.softmax_scale, int(cfg.sliding_window), slots
        self.kv_cache = KVCache(slots + 1, cfg.num_kv_heads, cfg.head_dim, dtype)  # + the spare row
        self.register_buffer("cache_fill", torch.zeros(slots + 1, dtype=torch.int64, device="cpu"), persistent=False)

    def forward(self, q, k, v, input_pos, mask, attend_rows=None):
        """q: [1,T,Hq,D], k/v: [1,T,Hkv,D]; `mask` (the full-cache causal mask) is unused -> [1,T,Hq*D].
        attend_rows: another implementation of self.attend_rows (a target's attention op)."""
        t = q.shape[1]
        cached_pos = self.cache_fill - 1
        cached_pos = torch.where(cached_pos < input_pos.min(), cached_pos, -1)
        key_pos = torch.cat((cached_pos, input_pos))
        dist = input_pos[:, None] - key_pos[None, :]
        allowed = (key_pos[None, :] >= 0) & (dist >= 0) & (dist < self.window)
        attn_mask = torch.where(allowed, 0.0, MASKED).to(q.dtype)
        y = (attend_rows or self.attend_rows)(q, torch.cat((self.kv_cache.k_cache, k), dim=1),
                                              torch.cat((self.kv_cache.v_cache, v), dim=1), attn_mask)
        keep = input_pos > input_pos.max() - self.slots  # the last `slots` positions of the call
        rows = torch.where(keep, input_pos % self.slots, self.slots)
        self.kv_cache.k_cache.index_copy_(1, rows, k)
        self.kv_cache.v_cache.index_copy_(1, rows, v)
        self.cache_fill.index_copy_(0, rows, torch.where(keep, input_pos + 1, 0))
        return y.reshape(1, t, self.n_heads * self.head_dim)

    def attend_rows(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """q [1,T,Hq,D] over the rows k, v [1,R,Hkv,D] with the additive mask [T,R] -> [1,T,Hq,D]. Grouped heads
        through SDPA's enable_gqa (repeat_interleave of a length-dependent tensor makes torch.export guard on its
        strides). A target may override this with its own attention op."""
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask,
                                           scale=self.scale, enable_gqa=self.n_heads != self.n_kv_heads)
        return y.transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, max_seq_len: int, dtype: torch.dtype, layer: int = 0):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.wq = nn.Linear(cfg.hidden_size, cfg.q_dim, bias=cfg.attention_bias)
        self.wk = nn.Linear(cfg.hidden_size, cfg.kv_dim, bias=cfg.attention_bias)
        self.wv = nn.Linear(cfg.hidden_size, cfg.kv_dim, bias=cfg.attention_bias)
        self.wo = nn.Linear(cfg.q_dim, cfg.hidden_size, bias=False)
        self.q_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps) if cfg.qk_norm else None
        self.k_norm = RMSNorm(cfg.head_dim, cfg.rms_norm_eps) if cfg.qk_norm else None
        self.rope: nn.Module = Rope()
        # a sliding layer whose window is shorter than the cache attends through a ring (of at most max_seq_len
        # rows); with a window at least max_seq_len long its causal mask is already the window's
        ring = cfg.is_sliding(layer) and cfg.sliding_window < max_seq_len
        self.attend: nn.Module = (RingCachedAttention(cfg, cfg.cache_positions(layer, max_seq_len), dtype) if ring
                                  else CachedAttention(cfg, max_seq_len, dtype))

    def forward(self, x, input_pos, cos, sin, mask):
        # -1, not the symbolic length: XNNPACK delegates a reshape with one inferred dim, not a symbolic one
        q = self.wq(x).view(1, -1, self.n_heads, self.head_dim)
        k = self.wk(x).view(1, -1, self.n_kv_heads, self.head_dim)
        v = self.wv(x).view(1, -1, self.n_kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = self.rope(q, cos, sin), self.rope(k, cos, sin)
        return self.wo(self.attend(q, k, v, input_pos, mask))


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


ACTIVATIONS = {"silu": F.silu, "gelu_tanh": _gelu_tanh}


class FeedForward(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.w3 = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.w2 = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)
        self.act = ACTIVATIONS[cfg.hidden_act]

    def forward(self, x):
        return self.w2(self.act(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, max_seq_len: int, dtype: torch.dtype, layer: int = 0):
        super().__init__()
        self.sliding = cfg.is_sliding(layer)
        self.attention_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.attention = Attention(cfg, max_seq_len, dtype, layer)
        self.ffn_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.feed_forward = FeedForward(cfg)
        # Gemma's norms on the far side of attention and the MLP; Identity keeps one forward for every family
        sandwich = cfg.sandwich_norms
        self.post_attention_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps) if sandwich else nn.Identity()
        self.post_ffw_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps) if sandwich else nn.Identity()

    def forward(self, x, input_pos, cos, sin, mask):
        x = x + self.post_attention_norm(self.attention(self.attention_norm(x), input_pos, cos, sin, mask))
        return x + self.post_ffw_norm(self.feed_forward(self.ffn_norm(x)))


class Decoder(nn.Module):
    """forward(tokens int64[1,T], input_pos int64[T]) -> logits float[1,T,vocab] (or [1,1,vocab])."""

    def __init__(self, cfg: ModelConfig, max_seq_len: int, dtype: torch.dtype = torch.float32,
                 last_logits_only: bool = False):
        super().__init__()
        self.config, self.max_seq_len, self.last_logits_only = cfg, max_seq_len, last_logits_only
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg, max_seq_len, dtype, i) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.output = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        cos, sin = rope_tables(cfg, max_seq_len)
        self.register_buffer("rope_cos", cos.to(dtype), persistent=False)
        self.register_buffer("rope_sin", sin.to(dtype), persistent=False)
        if cfg.has_sliding_layers:
            cos, sin = rope_tables(cfg, max_seq_len, local=True)
            self.register_buffer("rope_cos_local", cos.to(dtype), persistent=False)
            self.register_buffer("rope_sin_local", sin.to(dtype), persistent=False)
        pos = torch.arange(max_seq_len, device="cpu")
        mask = torch.where(pos[None, :] <= pos[:, None], 0.0, MASKED).to(dtype)
        self.register_buffer("causal_mask", mask, persistent=False)

    def forward(self, tokens: torch.Tensor, input_pos: torch.Tensor) -> torch.Tensor:
        x = self.tok_embeddings(tokens)
        if self.config.embed_scale is not None:
            x = x * self.config.embed_scale
        # [1, T, 1, D] once here, not per layer (in an exported graph each layer would repeat the unsqueezes)
        rope = {False: (self.rope_cos[input_pos][None, :, None, :], self.rope_sin[input_pos][None, :, None, :])}
        if self.config.has_sliding_layers:
            rope[True] = (self.rope_cos_local[input_pos][None, :, None, :],
                          self.rope_sin_local[input_pos][None, :, None, :])
        mask = self.causal_mask[input_pos]
        for layer in self.layers:
            cos, sin = rope[layer.sliding]
            x = layer(x, input_pos, cos, sin, mask)
        x = self.norm(x)
        if self.last_logits_only:
            x = x[:, -1:, :]
        return self.output(x)

    def reset_cache(self) -> None:
        for buf_name, buf in self.named_buffers():
            if buf_name.endswith(("k_cache", "v_cache")) or "cache" in buf_name.rsplit(".", 1)[-1]:
                buf.zero_()


def build_decoder(cfg: ModelConfig, weights: dict[str, torch.Tensor], max_seq_len: int,
                  dtype: torch.dtype = torch.float32, last_logits_only: bool = False) -> Decoder:
    """A Decoder whose parameters are the given canonical tensors (shared, not copied, when dtypes match)."""
    with torch.device("meta"):
        dec = Decoder(cfg, max_seq_len, dtype, last_logits_only)
    state = {k: (v if v.dtype == dtype else v.to(dtype)) for k, v in weights.items()}
    if cfg.tie_word_embeddings:
        state.pop("output.weight", None)
    dec.load_state_dict(state, strict=False, assign=True)
    if cfg.tie_word_embeddings:
        dec.output.weight = dec.tok_embeddings.weight
    # parameters that no checkpoint tensor filled are still on meta: a loader bug, never a silent random init
    left = [n for n, p in dec.named_parameters() if p.is_meta]
    if left:
        raise RuntimeError(f"decoder parameters without weights: {left[:5]}")
    dec.eval()
    for p in dec.parameters():
        p.requires_grad_(False)
    return dec
