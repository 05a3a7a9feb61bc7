"""The decoder written directly as a MIL program with coremltools' builder (no torch.export, no torch frontend).

Why: converting a torch.export graph peaked at 8 GB for a 0.5B model (the fp32 graph, the frontend's numpy copies of
every constant in fp32 and fp16, and the ExportedProgram, all alive at once). Here each weight goes from the EdgeModel
straight into one fp16 const (a view, no copy, when the model is loaded in fp16) or into int8/int4 data + fp16 scales
computed a few thousand rows at a time, so the program never holds an fp32 copy of the model.

The program is the same function the torch path produced: inputs `tokens` int32 [1, T] and `input_pos` int32 [T]
(T flexible), one fp16 state per layer and K/V named `layers_{i}_attention_attend_{k|v}_cache` [1, Hkv, S, D] (S:
max_seq_len, or a sliding layer's ring rows) written with `slice_update` + `coreml_update_state`, the iOS 18 fused
`scaled_dot_product_attention` (its implicit scale is 1/sqrt(D), torch's default, so q is multiplied by
softmax_scale * sqrt(D) only for a model with its own scale, Gemma 3), an fp16-safe RMSNorm (x divided by max|x|
before squaring: x² overflows fp16 above |x| ≈ 256, which real residual streams exceed), output `logits` fp16.

Gemma 3 (every quirk of edgekit.model.graph): embeddings times embed_scale, GeGLU (gelu TANH_APPROXIMATION), a norm
after attention and after the MLP, the softmax scale, and sliding layers with their own RoPE base attending through a
ring state of window + RING_REWIND rows (`ring_attention`, written by `scatter` at position % rows), as the eager
graph's RingCachedAttention: a real ring, not a full-length cache with a window mask.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from edgekit.model.graph import MASKED, rope_tables
from edgekit_coreml.source_grid import SourceGrid, describe, to_grid

if TYPE_CHECKING:
    from edgekit.model.edge_model import EdgeModel
    from edgekit.targets.base import TargetSpec
    from edgekit_coreml.quant import CoreMLQuant

QUANT_ROWS = 8192  # rows quantized at once: scales are per row (block or channel), so chunks give identical results


def state_name(layer: int, kv: str) -> str:
    return f"layers_{layer}_attention_attend_{kv}_cache"


def _fp16(t: torch.Tensor) -> np.ndarray:
    """The tensor as an fp16 numpy array: a view of it when it already is fp16, else one converted copy."""
    t = t.detach()
    return (t if t.dtype == torch.float16 else t.to(torch.float16)).numpy()


class Weights:
    """Emits each EdgeModel weight as a MIL const (fp16) or constexpr_blockwise_shift_scale (int8 / int4): re-quantized
    by the scheme, or under quant 'source' the checkpoint's own grid (source_grid.py), minimum as a correction."""

    def __init__(self, model: EdgeModel, q: CoreMLQuant):
        self.weights, self.q, self.cache = model.weights, q, {}
        self.source = model.source_quant if q.scheme == "source" else {}
        self.corrections: dict[str, Any] = {}            # name -> (fp16 const [N, K / group], group)
        self.kept: dict[str, SourceGrid] = {}            # the grids emitted, data dropped (for the artifact's record)
        self.floats: list[str] = []                       # 2-D weights the checkpoint stores as floats

    def fp16(self, name: str):
        from coremltools.converters.mil import Builder as mb

        return mb.const(val=_fp16(self.weights[name]), name=name.replace(".", "_"))

    def matrix(self, name: str):
        """A 2-D weight (linear, embedding, lm head): quantized when the scheme says so; built once per name."""
        if name not in self.cache:
            if name in self.source:
                self.cache[name] = self._source(name)
            elif self.q.bits is None:
                if self.q.scheme == "source":
                    self.floats.append(name)
                self.cache[name] = self.fp16(name)
            else:
                self.cache[name] = self._quantized(name)
        return self.cache[name]

    def linear(self, x, name: str, bias=None, out_name: str | None = None):
        """x @ W.T (+ bias), with an asymmetric source grid's per-group correction: + groupsum(x) @ C.T."""
        from coremltools.converters.mil import Builder as mb

        weight = self.matrix(name)
        corr = self.corrections.get(name)
        named = {} if out_name is None else {"name": out_name}
        if corr is None:
            return mb.linear(x=x, weight=weight, bias=bias, **named)
        c, group = corr
        k = self.source[name].shape[1]
        sums = mb.reduce_sum(x=mb.reshape(x=x, shape=[1, -1, k // group, group]), axes=[-1], keep_dims=False)
        main = mb.linear(x=x, weight=weight, bias=bias)
        return mb.add(x=main, y=mb.linear(x=sums, weight=c), **named)

    def embed(self, tokens, name: str):
        """The rows of an embedding table, with an asymmetric source grid's correction repeated over each group."""
        from coremltools.converters.mil import Builder as mb

        rows = mb.gather(x=self.matrix(name), indices=tokens, axis=0)
        corr = self.corrections.get(name)
        if corr is None:
            return rows
        c, group = corr
        k = self.source[name].shape[1]
        per_group = mb.expand_dims(x=mb.gather(x=c, indices=tokens, axis=0), axes=[-1])     # [1, T, K / group, 1]
        spread = mb.reshape(x=mb.tile(x=per_group, reps=[1, 1, 1, group]), shape=[1, -1, k])
        return mb.add(x=rows, y=spread)

    def _quantized(self, name: str):
        from coremltools.converters.mil import Builder as mb
        from coremltools.converters.mil.mil import types
        from coremltools.optimize._utils import compute_qparams_by_dtype

        from edgekit.errors import UnsupportedOption

        w = self.weights[name]
        rows, cols = w.shape
        dtype = types.string_to_builtin(f"int{self.q.bits}")
        blocks = self.q.block_sizes
        n_scales = 1 if blocks[1] == 0 else cols // blocks[1]
        if blocks[1] and cols % blocks[1]:
            raise UnsupportedOption(f"weight {name} of shape {tuple(w.shape)} cannot be split in blocks of "
                                    f"{self.q.block_size}; use -O granularity=per_channel or another block_size")
        data = np.empty((rows, cols), dtype=types.nptype_from_builtin(dtype))
        scale = np.empty((rows, n_scales), dtype=np.float16)
        for start in range(0, rows, QUANT_ROWS):
            part = _fp16(w[start:start + QUANT_ROWS])
            d, s, offset = compute_qparams_by_dtype(part, dtype, self.q.mode.upper(), blocks)
            if offset is not None:
                raise UnsupportedOption(f"quant mode {self.q.mode!r} gives offsets; accepted: linear_symmetric")
            data[start:start + len(part)], scale[start:start + len(part)] = d, s
        return mb.constexpr_blockwise_shift_scale(data=data, scale=scale, name=name.replace(".", "_"))

    def _source(self, name: str):
        from coremltools.converters.mil import Builder as mb
        from coremltools.converters.mil.mil import types

        grid = to_grid(self.source[name], name)
        data = np.empty(grid.shape, dtype=types.nptype_from_builtin(types.string_to_builtin(f"int{grid.bits}")))
        data[...] = grid.data
        stem = name.replace(".", "_")
        if grid.correction is not None:
            self.corrections[name] = (mb.const(val=grid.correction, name=stem + "_correction"), grid.group)
        self.kept[name] = replace(grid, data=np.empty((0, 0), np.int8))
        return mb.constexpr_blockwise_shift_scale(data=data, scale=grid.scale, name=stem)

    def record(self) -> dict[str, list[str]]:
        return describe(self.kept, self.floats)


def rms_norm(x, weight, eps: float, name: str):
    """weight * x / rms(x), computed on x / max|x| so that the squares stay inside fp16's range."""
    from coremltools.converters.mil import Builder as mb

    peak = mb.clip(x=mb.reduce_max(x=mb.abs(x=x), axes=[-1], keep_dims=True), alpha=np.float16(1e-4),
                   beta=np.float16(65504.0))
    xs = mb.real_div(x=x, y=peak)
    mean_sq = mb.reduce_mean(x=mb.mul(x=xs, y=xs), axes=[-1], keep_dims=True)
    eps_scaled = mb.real_div(x=mb.real_div(x=np.float16(eps), y=peak), y=peak)  # eps / max|x|²
    y = mb.mul(x=xs, y=mb.rsqrt(x=mb.add(x=mean_sq, y=eps_scaled)))
    return mb.mul(x=y, y=weight, name=name)


def rope(x, cos, sin, head_dim: int):
    """x [1, H, T, D] rotated (half-split layout); cos/sin [T, D] broadcast over heads."""
    from coremltools.converters.mil import Builder as mb

    half = head_dim // 2
    first = mb.slice_by_index(x=x, begin=[0, 0, 0, 0], end=[0, 0, 0, half], end_mask=[True, True, True, False])
    second = mb.slice_by_index(x=x, begin=[0, 0, 0, half], end=[0, 0, 0, 0], end_mask=[True, True, True, True])
    rotated = mb.concat(values=[mb.mul(x=second, y=np.float16(-1.0)), first], axis=-1)
    return mb.add(x=mb.mul(x=x, y=cos), y=mb.mul(x=rotated, y=sin))


def heads(x, n: int, d: int):
    """[1, T, n*d] -> [1, n, T, d]."""
    from coremltools.converters.mil import Builder as mb

    return mb.transpose(x=mb.reshape(x=x, shape=[1, -1, n, d]), perm=[0, 2, 1, 3])


def write_cache(state, new, begin, end, n_heads: int, rep: int, d: int):
    """Write new [1, Hkv, T, D] at positions begin..end of the state; the whole cache repeated to n_heads."""
    from coremltools.converters.mil import Builder as mb

    cache = mb.coreml_update_state(state=state, value=mb.slice_update(x=mb.read_state(input=state), update=new,
                                                                      begin=begin, end=end))
    return repeat_heads(cache, n_heads, rep, d)


def repeat_heads(cache, n_heads: int, rep: int, d: int):
    """[1, Hkv, S, D] -> [1, n_heads, S, D], each kv head repeated `rep` times (grouped-query attention)."""
    from coremltools.converters.mil import Builder as mb

    if rep == 1:
        return cache
    tiled = mb.tile(x=mb.expand_dims(x=cache, axes=[2]), reps=[1, 1, rep, 1, 1])
    return mb.reshape(x=tiled, shape=[1, n_heads, -1, d])


def ring_attention(q, k, v, i: int, ctx: dict[str, Any]):
    """A sliding layer: q [1, Hq, T, D] attends over the ring's rows as they were before this call together with the
    new k / v [1, Hkv, T, D] (so a prefill longer than the window is exact, as RingCachedAttention), masked by the
    positions each row holds (ring_positions); then the last min(T, rows) new rows are scattered into the ring at
    position % rows. The state holds exactly config.cache_positions rows (no spare row: the rows dropped from a
    long prefill are sliced off instead of written to one)."""
    from coremltools.converters.mil import Builder as mb

    cfg, ring = ctx["cfg"], ctx["ring"]
    hq, hkv, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    rows = []
    for kv, new in (("k", k), ("v", v)):
        state = ctx["states"][state_name(i, kv)]
        old = mb.read_state(input=state)
        kept = mb.slice_by_index(x=new, begin=ring["keep_begin"], end=[0, 0, 0, 0], end_mask=[True] * 4)
        mb.coreml_update_state(state=state, value=mb.scatter(data=old, indices=ring["write_rows"], updates=kept,
                                                             axis=2, mode="update"))
        rows.append(repeat_heads(mb.concat(values=[old, new], axis=2), hq, hq // hkv, d))
    return mb.scaled_dot_product_attention(query=q, key=rows[0], value=rows[1], attn_mask=ring["mask"])


def attention(x, i: int, w: Weights, ctx: dict[str, Any]):
    from coremltools.converters.mil import Builder as mb

    cfg, p = ctx["cfg"], f"layers.{i}.attention."
    hq, hkv, d, size = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, ctx["size"]

    def proj(name, n):
        bias = w.fp16(p + name + ".bias") if cfg.attention_bias else None
        return heads(w.linear(x, p + name + ".weight", bias=bias), n, d)

    q, k, v = proj("wq", hq), proj("wk", hkv), proj("wv", hkv)
    if cfg.qk_norm:
        q = rms_norm(q, w.fp16(p + "q_norm.weight"), cfg.rms_norm_eps, f"layers_{i}_q_norm")
        k = rms_norm(k, w.fp16(p + "k_norm.weight"), cfg.rms_norm_eps, f"layers_{i}_k_norm")
    cos, sin = ctx["rope"][cfg.is_sliding(i)]
    q, k = rope(q, cos, sin, d), rope(k, cos, sin, d)
    # the fused op scales q.k by 1/sqrt(D); a model with its own softmax scale (Gemma 3) gets the ratio on q
    ratio = cfg.softmax_scale * d ** 0.5
    if abs(ratio - 1.0) > 1e-12:
        q = mb.mul(x=q, y=np.float16(ratio))
    if uses_ring(cfg, i, size):
        y = ring_attention(q, k, v, i, ctx)
    else:
        rep = hq // hkv
        k_all = write_cache(ctx["states"][state_name(i, "k")], k, ctx["begin"], ctx["end"], hq, rep, d)
        v_all = write_cache(ctx["states"][state_name(i, "v")], v, ctx["begin"], ctx["end"], hq, rep, d)
        y = mb.scaled_dot_product_attention(query=q, key=k_all, value=v_all, attn_mask=ctx["mask"])
    y = mb.reshape(x=mb.transpose(x=y, perm=[0, 2, 1, 3]), shape=[1, -1, hq * d])
    return w.linear(y, p + "wo.weight")


def uses_ring(cfg, layer: int, size: int) -> bool:
    """As graph.Attention: a sliding layer whose window is shorter than the cache; a window at least as long as the
    cache is the causal mask already."""
    return cfg.is_sliding(layer) and cfg.sliding_window < size


def cache_rows(cfg, layer: int, size: int) -> int:
    """The rows layer `layer`'s K and V states hold: the ring's window + RING_REWIND (at most `size`), else `size`."""
    return cfg.cache_positions(layer, size) if uses_ring(cfg, layer, size) else size


ACTIVATIONS = {"silu": "silu", "gelu_tanh": "gelu"}


def activation(x, name: str):
    """The MLP gate's activation: SwiGLU's silu or GeGLU's tanh-approximate gelu (torch's approximate='tanh')."""
    from coremltools.converters.mil import Builder as mb

    from edgekit.errors import UnsupportedOption

    if name not in ACTIVATIONS:
        raise UnsupportedOption(f"hidden_act {name!r} is not built by target 'coreml'; accepted: "
                                f"{', '.join(ACTIVATIONS)}")
    return mb.silu(x=x) if name == "silu" else mb.gelu(x=x, mode="TANH_APPROXIMATION")


RESIDUAL_SCALE = 32.0


def residual_scale(cfg) -> float:
    """What the program divides the residual stream by. Gemma 3's stream overflows fp16: its massive activations reach
    55,232 + 15,432 at one channel of the real 270M on edgekit's eval text (inf at that residual add). Every addend of a
    sandwich-norm model's stream leaves a norm whose weight can carry 1/S (and the embedding its scale), and every
    reader of the stream is a norm, which is scale-free (its eps divided by S², so the math is the eager graph's), so
    the stream is held as x / S at no cost. A power of two: the scaled weights round nowhere (above fp16's subnormals).
    Models without sandwich norms keep S = 1 (their programs are unchanged)."""
    return RESIDUAL_SCALE if cfg.sandwich_norms else 1.0


def block(x, i: int, w: Weights, ctx: dict[str, Any]):
    from coremltools.converters.mil import Builder as mb

    cfg, p = ctx["cfg"], f"layers.{i}."
    eps, scale = cfg.rms_norm_eps, residual_scale(cfg)

    def post(y, norm: str):  # Gemma's norm on the far side of attention / the MLP, before the residual add
        if not cfg.sandwich_norms:
            return y
        weight = mb.const(val=(_fp16(w.weights[p + norm + ".weight"]) / np.float16(scale)).astype(np.float16),
                          name=f"layers_{i}_{norm}_weight_over_residual_scale")
        return rms_norm(y, weight, eps, f"layers_{i}_{norm}")

    h = rms_norm(x, w.fp16(p + "attention_norm.weight"), eps / scale ** 2, f"layers_{i}_attention_norm")
    x = mb.add(x=x, y=post(attention(h, i, w, ctx), "post_attention_norm"))
    h = rms_norm(x, w.fp16(p + "ffn_norm.weight"), eps / scale ** 2, f"layers_{i}_ffn_norm")
    f = p + "feed_forward."
    gate = activation(w.linear(h, f + "w1.weight"), cfg.hidden_act)
    up = w.linear(h, f + "w3.weight")
    return mb.add(x=x, y=post(w.linear(mb.mul(x=gate, y=up), f + "w2.weight"), "post_ffw_norm"))


def positions(tokens, input_pos, cfg, size: int):
    """Shared per call: rope rows, mask rows and the cache slice [start, start + T) (input_pos is consecutive); with
    sliding layers also their rope rows and the ring's mask and write rows (ring_positions)."""
    from coremltools.converters.mil import Builder as mb

    cos, sin = rope_tables(cfg, size)
    pos = torch.arange(size)
    mask = torch.where(pos[None, :] <= pos[:, None], 0.0, MASKED)
    table = {n: mb.const(val=t.to(torch.float16).numpy(), name=n)
             for n, t in (("rope_cos", cos), ("rope_sin", sin), ("causal_mask", mask))}
    start = mb.slice_by_index(x=input_pos, begin=[0], end=[1])                       # [1]
    length = mb.slice_by_index(x=mb.shape(x=tokens), begin=[1], end=[2])            # [1]: T
    stop = mb.add(x=start, y=length)
    zeros = np.zeros(2, np.int32)
    out = {"rope": {False: (mb.gather(x=table["rope_cos"], indices=input_pos, axis=0),
                            mb.gather(x=table["rope_sin"], indices=input_pos, axis=0))},
           "mask": mb.gather(x=table["causal_mask"], indices=input_pos, axis=0),
           "begin": mb.concat(values=[zeros, start, np.zeros(1, np.int32)], axis=0),
           "end": mb.concat(values=[np.array([1, cfg.num_kv_heads], np.int32), stop,
                                    np.array([cfg.head_dim], np.int32)], axis=0)}
    if cfg.has_sliding_layers:
        cos, sin = rope_tables(cfg, size, local=True)
        out["rope"][True] = tuple(mb.gather(x=mb.const(val=t.to(torch.float16).numpy(), name=n), indices=input_pos,
                                            axis=0) for n, t in (("rope_cos_local", cos), ("rope_sin_local", sin)))
    rings = {cache_rows(cfg, i, size) for i in range(cfg.num_layers) if uses_ring(cfg, i, size)}
    if rings:  # every sliding layer has the same window, so one ring geometry serves them all
        (rows,) = rings
        out["ring"] = ring_positions(input_pos, start, length, rows, int(cfg.sliding_window))
    return out


def ring_positions(input_pos, start, length, rows: int, window: int) -> dict[str, Any]:
    """The ring's per-call tensors, from positions alone (no state of which row holds what: states are fp16, which
    counts positions exactly only up to 2048).

    Row r holds the latest position p < start with p % rows == r, p = start - 1 - ((start - 1 - r) mod rows) (< 0:
    never written). After a caller went back (start before the cached length, a rejected speculative draft) a row may
    instead hold a stale position q >= start; q - rows, the position it replaced, is then older than start - window
    whenever the caller went back at most RING_REWIND positions (rows = window + RING_REWIND), so it is masked either
    way and the result is exact, as the eager graph's ring; a ring of the whole cache (rows = size) never wraps, so
    any rewind is exact. Going back further than RING_REWIND on a wrapped ring is not exact: a stale row may then be
    attended as the older position it replaced (the eager ring has lost those rows too, and masks them instead).

    mask [T, rows + T] over the cached rows then the new ones: a key is attended when it exists (p >= 0), is not in
    the future and lies within the window (i - p < window, the query itself included). write_rows: the rows of the
    last min(T, rows) new positions (keep_begin: where they start in the call), distinct, so the scatter is exact."""
    from coremltools.converters.mil import Builder as mb

    row = np.arange(rows, dtype=np.int32)
    last = mb.sub(x=start, y=np.int32(1))
    # + rows keeps the dividend >= 0: mod of a negative int32 is not something to rely on across runtimes
    back = mb.mod(x=mb.add(x=mb.sub(x=last, y=row), y=np.int32(rows)), y=np.int32(rows))
    held = mb.sub(x=last, y=back)                                                          # [rows]
    key_pos = mb.concat(values=[held, input_pos], axis=0)                                  # [rows + T]
    dist = mb.sub(x=mb.expand_dims(x=input_pos, axes=[1]), y=mb.expand_dims(x=key_pos, axes=[0]))
    seen = mb.logical_and(x=mb.greater_equal(x=dist, y=np.int32(0)), y=mb.less(x=dist, y=np.int32(window)))
    allowed = mb.logical_and(x=seen, y=mb.expand_dims(x=mb.greater_equal(x=key_pos, y=np.int32(0)), axes=[0]))
    # (1 - allowed) * MASKED: select with scalar branches loses its shape in coremltools' type inference
    mask = mb.mul(x=mb.sub(x=np.float16(1.0), y=mb.cast(x=allowed, dtype="fp16")), y=np.float16(MASKED))
    first_kept = mb.maximum(x=mb.sub(x=length, y=np.int32(rows)), y=np.int32(0))           # [1]
    kept_pos = mb.slice_by_index(x=input_pos, begin=first_kept, end=[0], end_mask=[True])
    return {"mask": mask, "write_rows": mb.mod(x=kept_pos, y=np.int32(rows)),
            "keep_begin": mb.concat(values=[np.zeros(2, np.int32), first_kept, np.zeros(1, np.int32)], axis=0)}


def build_program(model: EdgeModel, spec: TargetSpec, q: CoreMLQuant, record: dict | None = None):
    """The iOS 18 MIL program of `model` (one function "main"), weights emitted layer by layer. Under quant 'source'
    `record` (when given) receives which block types were kept and which weights stayed fp16."""
    import coremltools as ct
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import Function, Program, types
    from coremltools.converters.mil.mil.program import get_new_symbol

    cfg, size = model.config, spec.max_seq_len
    seq = get_new_symbol()
    specs = {"tokens": mb.placeholder(shape=(1, seq), dtype=types.int32),
             "input_pos": mb.placeholder(shape=(seq,), dtype=types.int32)}
    for i in range(cfg.num_layers):
        for kv in ("k", "v"):
            specs[state_name(i, kv)] = mb.StateTensorSpec((1, cfg.num_kv_heads, cache_rows(cfg, i, size),
                                                           cfg.head_dim), types.fp16)
    w = Weights(model, q)
    with Function(specs, opset_version=ct.target.iOS18) as fn:
        ctx = {"cfg": cfg, "size": size, "states": fn.inputs,
               **positions(fn.inputs["tokens"], fn.inputs["input_pos"], cfg, size)}
        x = w.embed(fn.inputs["tokens"], "tok_embeddings.weight")
        stream = (cfg.embed_scale or 1.0) / residual_scale(cfg)   # the residual stream is held as x / S
        if stream != 1.0:
            x = mb.mul(x=x, y=np.float16(stream))
        for i in range(cfg.num_layers):
            x = block(x, i, w, ctx)
        x = rms_norm(x, w.fp16("norm.weight"), cfg.rms_norm_eps / residual_scale(cfg) ** 2, "final_norm")
        if spec.last_logits_only:
            x = mb.slice_by_index(x=x, begin=[0, -1, 0], end=[0, 0, 0], end_mask=[True, True, True])
        head = "tok_embeddings.weight" if cfg.tie_word_embeddings else "output.weight"
        fn.set_outputs([w.linear(x, head, out_name="logits")])
    if record is not None and q.scheme == "source":
        record.update(w.record())
    prog = Program()
    prog.add_function("main", fn)
    return prog
