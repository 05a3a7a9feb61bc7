"""Decoder layers whose 8da4w work runs in four edgekit kernel calls (linear_kernel 'edgekit'), plus the attention.

Per layer, instead of seven linears with RMSNorm, rotary, SiLU, products and residual adds around them:

    qkv = edgekit::qkv_rope_q4(x)                 RMSNorm -> [q | k | v] -> q/k norms (Qwen3) -> rotary
    a   = edgekit::qkv_cache_attention(qkv, k_cache!, v_cache!)   fp32 caches with edgekit's attention: the k / v rows
                                                  written and q attended in one op (cache_attention.py); any other
          attend(q, k, v)                         attention module (llama::custom_sdpa, int8 cache) gets q, k, v
    h   = edgekit::fused_linear_q4(a, wo, residual=x)
    gu  = edgekit::fused_linear_q4(h, [w1 | w3], norm=ffn_norm)
    out = edgekit::fused_linear_q4(gu, w2, swiglu, residual=h)

and the final RMSNorm goes into the output layer's call. q/k/v and gate/up are concatenated by rows after
quantization, so the codes and scales are exactly those of the separate linears (and of the eager reference).
A decode step is then ~8 ops per layer: a step that XNNPACK split into 5 delegate calls and ~10 portable ops per
layer spent ~2.5 ms of ~10 ms outside the int4 GEMMs.
"""
from __future__ import annotations

import torch
from torch import nn

from edgekit_executorch.kernels.linear_q4 import is_8da4w, pack, trailing_args


class Q4Weights(nn.Module):
    """The packed weights of one or more 8da4w linears stacked by rows (same input width and group).

    `mins` / `scale_dtype` (q4.pack's): with mins the linears' codes must be unsigned 0..15 and w = s * code + m.
    `grid` (codes, scales, group, mins) instead of the linears' torchao weights: a checkpoint's own grid (quant
    'source', source_q4.py), the linears then give only their biases; act_per_group quantizes activations per group."""

    def __init__(self, linears: list[nn.Linear], mins: torch.Tensor | None = None,
                 scale_dtype: torch.dtype = torch.bfloat16, grid: tuple | None = None, act_per_group: bool = False):
        super().__init__()
        self.act_per_group = act_per_group
        if grid is None:
            codes, scales, self.group_size = self._stacked(linears)
        else:
            codes, scales, self.group_size, mins = grid
        self.out_features = codes.shape[0]
        packed, s16, rowsum, *tiled_mins = pack(codes, scales, self.group_size, mins, scale_dtype)
        self.register_buffer("packed", packed)
        self.register_buffer("scales", s16)
        self.register_buffer("rowsum", rowsum)
        self.register_buffer("mins", tiled_mins[0] if tiled_mins else None)
        biases = [lin.bias for lin in linears]
        bias = None
        if any(b is not None for b in biases):
            bias = torch.cat([b.detach().float() if b is not None else torch.zeros(lin.out_features)
                              for b, lin in zip(biases, linears)])
        self.register_buffer("bias", bias)

    @classmethod
    def from_quantized(cls, tensors: list, biases: list[torch.Tensor | None] | None = None,
                       scale_dtype: torch.dtype | None = None, act_per_group: bool = False) -> Q4Weights:
        """Stacks 4-bit quantized tensors (edgekit.quant's QuantizedTensor: codes uint8 0..15, scales, mins or None)
        by rows; scale_dtype None: fp16 or bf16 when one holds every scale and min exactly, else fp16."""
        from edgekit.kernels.q4 import lossless_scale_dtype

        if len({(t.group_size, t.codes.shape[1], t.mins is None, t.bits) for t in tensors}) != 1 or tensors[0].bits != 4:
            raise ValueError("stacked tensors need 4 bits, one input width, one group size and all or no minimums")
        cat = (lambda xs: xs[0]) if len(tensors) == 1 else torch.cat
        codes, scales = cat([t.codes for t in tensors]), cat([t.scales for t in tensors])
        mins = None if tensors[0].mins is None else cat([t.mins for t in tensors])
        if mins is None:   # the symmetric convention w = s * (codes - 8) -> the kernel's signed codes
            codes = codes.to(torch.int16).sub(8).to(torch.int8)
        holders = [_BiasOnly(b, t.codes.shape[0]) for b, t in zip(biases or [None] * len(tensors), tensors)]
        return cls(holders, scale_dtype=scale_dtype or lossless_scale_dtype(scales, mins) or torch.float16,
                   grid=(codes, scales, tensors[0].group_size, mins), act_per_group=act_per_group)

    @staticmethod
    def _stacked(linears: list[nn.Linear]) -> tuple[torch.Tensor, torch.Tensor, int]:
        weights = [lin.weight for lin in linears]
        groups = {int(w.block_size[-1]) for w in weights}
        if len(groups) != 1 or len({w.shape[1] for w in weights}) != 1:
            raise ValueError("stacked linears need one input width and one group size")
        # one linear (wo, w2, the output layer): no concatenated copy of its codes (150M for a 150k vocabulary)
        codes = weights[0].qdata if len(weights) == 1 else torch.cat([w.qdata for w in weights])
        scales = torch.cat([w.scale.to(torch.float32).reshape(w.shape[0], -1) for w in weights])
        return codes, scales, groups.pop()

    def args(self) -> tuple:
        return self.packed, self.scales, self.rowsum, self.bias, self.group_size

    def extra(self) -> tuple:
        """The fused ops' trailing (mins, act_per_group), only as far as they are set (else the original arity)."""
        return trailing_args(self.mins, self.act_per_group)


class _BiasOnly:
    """What Q4Weights reads of a linear when its grid comes from elsewhere: the bias and the row count."""

    def __init__(self, bias: torch.Tensor | None, out_features: int):
        self.bias, self.out_features = bias, out_features


def _norm_weight(norm: nn.Module) -> torch.Tensor:
    return norm.weight.detach().to(torch.float32)


class FusedQ4Block(nn.Module):
    """`weights` (qkv, wo, gate_up, down -> Q4Weights) when they are made elsewhere (quant 'source'); else the
    block's 8da4w linears are packed."""

    def __init__(self, block: nn.Module, weights: dict[str, Q4Weights] | None = None):
        super().__init__()
        att, ff = block.attention, block.feed_forward
        self.sliding = block.sliding  # the Decoder hands each layer its rope tables by this
        self.q_heads, self.kv_heads, self.head_dim = att.n_heads, att.n_kv_heads, att.head_dim
        if weights is None:
            weights = {"qkv": Q4Weights([att.wq, att.wk, att.wv]), "wo": Q4Weights([att.wo]),
                       "gate_up": Q4Weights([ff.w1, ff.w3]), "down": Q4Weights([ff.w2])}
        self.qkv, self.wo, self.gate_up, self.down = (weights[k] for k in ("qkv", "wo", "gate_up", "down"))
        self.register_buffer("attention_norm", _norm_weight(block.attention_norm))
        self.register_buffer("ffn_norm", _norm_weight(block.ffn_norm))
        self.attention_eps, self.ffn_eps = float(block.attention_norm.eps), float(block.ffn_norm.eps)
        self.register_buffer("q_norm", None if att.q_norm is None else _norm_weight(att.q_norm))
        self.register_buffer("k_norm", None if att.k_norm is None else _norm_weight(att.k_norm))
        self.attend = att.attend  # kept as a submodule either way: the cache buffers keep their names
        self.cache_attention = uses_cache_attention(att.attend)

    def forward(self, x, input_pos, cos, sin, mask):
        hq, hkv, d = self.q_heads, self.kv_heads, self.head_dim
        qkv = torch.ops.edgekit.qkv_rope_q4(x, *self.qkv.args(), self.attention_norm, self.attention_eps, cos, sin,
                                            hq, hkv, d, self.q_norm, self.k_norm, *self.qkv.extra())
        if self.cache_attention:
            cache = self.attend.kv_cache
            a = torch.ops.edgekit.qkv_cache_attention(qkv, cache.k_cache, cache.v_cache, input_pos, hq, hkv)
        else:
            qkv = qkv.view(1, -1, hq + 2 * hkv, d)
            q, k, v = qkv[:, :, :hq], qkv[:, :, hq:hq + hkv], qkv[:, :, hq + hkv:]
            a = self.attend(q, k, v, input_pos, mask)
        h = torch.ops.edgekit.fused_linear_q4(a, *self.wo.args(), self.wo.out_features, None, 0.0, False, x,
                                              *self.wo.extra())
        gu = torch.ops.edgekit.fused_linear_q4(h, *self.gate_up.args(), self.gate_up.out_features, self.ffn_norm,
                                               self.ffn_eps, False, None, *self.gate_up.extra())
        return torch.ops.edgekit.fused_linear_q4(gu, *self.down.args(), self.down.out_features, None, 0.0, True, h,
                                                 *self.down.extra())


class FusedQ4Output(nn.Module):
    """The final RMSNorm and the 8da4w output layer in one call (the decoder's own norm becomes Identity)."""

    def __init__(self, norm: nn.Module, output: nn.Linear, weights: Q4Weights | None = None):
        super().__init__()
        self.weights = Q4Weights([output]) if weights is None else weights
        self.register_buffer("norm", _norm_weight(norm))
        self.eps = float(norm.eps)

    def forward(self, x):
        return torch.ops.edgekit.fused_linear_q4(x, *self.weights.args(), self.weights.out_features, self.norm,
                                                 self.eps, False, None, *self.weights.extra())


def uses_cache_attention(attend: nn.Module) -> bool:
    """edgekit's attention over fp32 caches (attention_kernel 'edgekit'): the fused block runs it as
    edgekit::qkv_cache_attention, cache writes included."""
    from edgekit_executorch.attention import EdgekitCacheAttention

    cache = getattr(attend, "kv_cache", None)
    return (isinstance(attend, EdgekitCacheAttention) and cache is not None
            and cache.k_cache.dtype == torch.float32 and cache.v_cache.dtype == torch.float32)


def plain_layer(block: nn.Module) -> bool:
    """A pre-norm SwiGLU layer at the default softmax scale, its q/k norms (if any) with the layer norm's eps: what
    the four kernel calls compute. A Gemma layer (norms after attention and the MLP, GeGLU, its own scale, a sliding
    window) is not one."""
    att, ff = getattr(block, "attention", None), getattr(block, "feed_forward", None)
    if att is None or ff is None:
        return False
    return (isinstance(getattr(block, "post_attention_norm", nn.Identity()), nn.Identity)
            and isinstance(getattr(block, "post_ffw_norm", nn.Identity()), nn.Identity)
            and getattr(ff, "act", nn.functional.silu) is nn.functional.silu and not getattr(block, "sliding", False)
            and abs(getattr(att.attend, "scale", att.head_dim ** -0.5) - att.head_dim ** -0.5) < 1e-12
            and (att.q_norm is None or float(att.q_norm.eps) == float(block.attention_norm.eps)))


def fusable(block: nn.Module) -> bool:
    if not plain_layer(block):
        return False
    att, ff = block.attention, block.feed_forward
    linears = (att.wq, att.wk, att.wv, att.wo, ff.w1, ff.w3, ff.w2)
    return all(isinstance(lin, nn.Linear) and is_8da4w(lin.weight) for lin in linears)


def use_fused_q4_blocks(decoder: nn.Module) -> dict[str, int]:
    """Swaps every fusable layer for a FusedQ4Block and an 8da4w output layer for FusedQ4Output (with the final
    norm); any other 8da4w linear becomes a plain Q4Linear. Call after the attention modules are in place."""
    from edgekit_executorch.kernels import cache_attention  # noqa: F401  (registers edgekit::qkv_cache_attention)
    from edgekit_executorch.kernels.linear_q4 import use_q4_linears

    fused = cached = 0
    for i, block in enumerate(decoder.layers):
        if fusable(block):
            decoder.layers[i] = FusedQ4Block(block)
            fused += 1
            cached += decoder.layers[i].cache_attention
    output = 0
    if isinstance(decoder.output, nn.Linear) and is_8da4w(decoder.output.weight):
        decoder.output = FusedQ4Output(decoder.norm, decoder.output)
        decoder.norm = nn.Identity()
        output = 1
    return {"fused_layers": fused, "cache_attention_layers": cached, "fused_output": output,
            "q4_linears": use_q4_linears(decoder)}
