"""The decoder written directly as a MIL program with coremltools' builder (no torch.export, no torch frontend).

Why: converting a torch.export graph peaked at 8 GB for a 0.5B model (the fp32 graph, the frontend's numpy copies of
every constant in fp32 and fp16, and the ExportedProgram, all alive at once). Here each weight goes from the EdgeModel
straight into one fp16 const (a view, no copy, when the model is loaded in fp16) or into int8/int4 data + fp16 scales
computed a few thousand rows at a time, so the program never holds an fp32 copy of the model.

The program is the same function the torch path produced: inputs `tokens` int32 [1, T] and `input_pos` int32 [T]
(T flexible), one fp16 state per layer and K/V named `layers_{i}_attention_attend_{k|v}_cache` [1, Hkv, S, D] written
with `slice_update` + `coreml_update_state`, the iOS 18 fused `scaled_dot_product_attention` (its implicit scale is
1/sqrt(D), torch's default, so q needs no extra scaling), an fp16-safe RMSNorm (x divided by max|x| before squaring:
x² overflows fp16 above |x| ≈ 256, which real residual streams exceed), output `logits` fp16.
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


def write_cache(state, new, begin, end, n_heads: int, rep: int, size: int, d: int):
    """Write new [1, Hkv, T, D] at positions begin..end of the state; the whole cache repeated to n_heads."""
    from coremltools.converters.mil import Builder as mb

    cache = mb.coreml_update_state(state=state, value=mb.slice_update(x=mb.read_state(input=state), update=new,
                                                                      begin=begin, end=end))
    if rep == 1:
        return cache
    tiled = mb.tile(x=mb.expand_dims(x=cache, axes=[2]), reps=[1, 1, rep, 1, 1])
    return mb.reshape(x=tiled, shape=[1, n_heads, size, d])


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
    q, k = rope(q, ctx["cos"], ctx["sin"], d), rope(k, ctx["cos"], ctx["sin"], d)
    rep = hq // hkv
    k_all = write_cache(ctx["states"][state_name(i, "k")], k, ctx["begin"], ctx["end"], hq, rep, size, d)
    v_all = write_cache(ctx["states"][state_name(i, "v")], v, ctx["begin"], ctx["end"], hq, rep, size, d)
    y = mb.scaled_dot_product_attention(query=q, key=k_all, value=v_all, attn_mask=ctx["mask"])
    y = mb.reshape(x=mb.transpose(x=y, perm=[0, 2, 1, 3]), shape=[1, -1, hq * d])
    return w.linear(y, p + "wo.weight")


def block(x, i: int, w: Weights, ctx: dict[str, Any]):
    from coremltools.converters.mil import Builder as mb

    eps, p = ctx["cfg"].rms_norm_eps, f"layers.{i}."
    h = rms_norm(x, w.fp16(p + "attention_norm.weight"), eps, f"layers_{i}_attention_norm")
    x = mb.add(x=x, y=attention(h, i, w, ctx))
    h = rms_norm(x, w.fp16(p + "ffn_norm.weight"), eps, f"layers_{i}_ffn_norm")
    f = p + "feed_forward."
    gate = mb.silu(x=w.linear(h, f + "w1.weight"))
    up = w.linear(h, f + "w3.weight")
    return mb.add(x=x, y=w.linear(mb.mul(x=gate, y=up), f + "w2.weight"))


def positions(tokens, input_pos, cfg, size: int):
    """Shared per call: rope rows, mask rows and the cache slice [start, start + T) (input_pos is consecutive)."""
    from coremltools.converters.mil import Builder as mb

    cos, sin = rope_tables(cfg, size)
    pos = torch.arange(size)
    mask = torch.where(pos[None, :] <= pos[:, None], 0.0, MASKED)
    table = {n: mb.const(val=t.to(torch.float16).numpy(), name=n)
             for n, t in (("rope_cos", cos), ("rope_sin", sin), ("causal_mask", mask))}
    start = mb.slice_by_index(x=input_pos, begin=[0], end=[1])                       # [1]
    stop = mb.add(x=start, y=mb.slice_by_index(x=mb.shape(x=tokens), begin=[1], end=[2]))
    zeros = np.zeros(2, np.int32)
    return {"cos": mb.gather(x=table["rope_cos"], indices=input_pos, axis=0),
            "sin": mb.gather(x=table["rope_sin"], indices=input_pos, axis=0),
            "mask": mb.gather(x=table["causal_mask"], indices=input_pos, axis=0),
            "begin": mb.concat(values=[zeros, start, np.zeros(1, np.int32)], axis=0),
            "end": mb.concat(values=[np.array([1, cfg.num_kv_heads], np.int32), stop,
                                     np.array([cfg.head_dim], np.int32)], axis=0)}


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
            specs[state_name(i, kv)] = mb.StateTensorSpec((1, cfg.num_kv_heads, size, cfg.head_dim), types.fp16)
    w = Weights(model, q)
    with Function(specs, opset_version=ct.target.iOS18) as fn:
        ctx = {"cfg": cfg, "size": size, "states": fn.inputs,
               **positions(fn.inputs["tokens"], fn.inputs["input_pos"], cfg, size)}
        x = w.embed(fn.inputs["tokens"], "tok_embeddings.weight")
        for i in range(cfg.num_layers):
            x = block(x, i, w, ctx)
        x = rms_norm(x, w.fp16("norm.weight"), cfg.rms_norm_eps, "final_norm")
        if spec.last_logits_only:
            x = mb.slice_by_index(x=x, begin=[0, -1, 0], end=[0, 0, 0], end_mask=[True, True, True])
        head = "tok_embeddings.weight" if cfg.tie_word_embeddings else "output.weight"
        fn.set_outputs([w.linear(x, head, out_name="logits")])
    if record is not None and q.scheme == "source":
        record.update(w.record())
    prog = Program()
    prog.add_function("main", fn)
    return prog
