"""Writes the decoder as an ONNX graph directly from the canonical weights (no torch.export / tracing).

Why direct: the graph is small and fixed (embedding, N x [RMSNorm, QKV, GQA, O, RMSNorm, SwiGLU], norm, lm_head),
so writing it node by node gives exactly the fused ORT kernels we want (GroupQueryAttention with rotary,
SimplifiedLayerNormalization / SkipSimplifiedLayerNormalization, MatMulNBits, GatherBlockQuantized; or, with
linear_kernel 'edgekit', edgekit's LinearQ4 / GatherQ4 custom ops, SwiGLU fused into the down projection, and for an
8-bit grid LinearQ8 / GatherQ8), takes seconds
and never materialises an fp32 copy of the network beyond one tensor at a time. The inputs/outputs follow
onnxruntime-genai's decoder contract (input_ids, attention_mask, past_key_values.N.*, logits, present.N.*).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from edgekit.model.graph import rope_inv_freq
from edgekit_onnx.attention import FloatKVCache, mask_to_gqa_lengths
from edgekit_onnx.quant import QuantPlan, pack_blockwise, pack_tiled
from edgekit_onnx.serialize import TensorSink

if TYPE_CHECKING:
    from edgekit.model.config import ModelConfig

log = logging.getLogger(__name__)

OPSET, MS_OPSET, IR_VERSION = 17, 1, 9   # loads in ORT >= 1.14's format support; the contrib ops set the real floor
KERNEL_DOMAIN, KERNEL_OPSET = "edgekit", 1   # edgekit's custom ops (linear_kernel 'edgekit'): edgekit_onnx/kernels


@dataclass
class GraphBuilder:
    cfg: ModelConfig
    plan: QuantPlan
    sink: TensorSink
    max_seq_len: int
    last_logits_only: bool
    nodes: list = field(default_factory=list)
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    seqlens_k: str = "/mask/seqlens_k"
    total_seq_len: str = "/mask/total_seq_len"
    cos_cache: str = "cos_cache"
    sin_cache: str = "sin_cache"
    # the sliding-window layers' rotary tables (Gemma 3: their own base, rope_local_theta)
    cos_cache_local: str = "cos_cache_local"
    sin_cache_local: str = "sin_cache_local"
    op_counts: dict = field(default_factory=dict)
    packed: dict = field(default_factory=dict)     # name -> (packed, scales) from the quantize stage
    k_dims: dict = field(default_factory=dict)     # name -> K (input features) of every linear
    out_dims: dict = field(default_factory=dict)   # name -> N (output features) of every linear
    shared: set = field(default_factory=set)       # initializers already written for another node
    grids: dict = field(default_factory=dict)      # name -> source_grid.Grid: the checkpoint's own codes (quant 'source')
    gather_scales: dict = field(default_factory=dict)   # grid name -> its scales as GatherBlockQuantized's [N, K/g, 1]
    _consts: set = field(default_factory=set)

    @property
    def elem_type(self) -> int:
        return TensorProto.FLOAT16 if self.plan.float_dtype == "fp16" else TensorProto.FLOAT

    @property
    def np_dtype(self) -> type:
        return np.float16 if self.plan.float_dtype == "fp16" else np.float32

    def rope_caches(self, layer: int) -> tuple[str, str]:
        """The (cos, sin) caches layer `layer` rotates with: the local ones on a sliding-window layer."""
        if self.cfg.is_sliding(layer):
            return self.cos_cache_local, self.sin_cache_local
        return self.cos_cache, self.sin_cache

    # ---- helpers ----------------------------------------------------------
    def node(self, op: str, inputs: list[str], name: str, n_out: int = 1, domain: str = "", **attrs: Any) -> list[str]:
        outs = [f"{name}/output_{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, domain=domain or None, **attrs))
        self.op_counts[op] = self.op_counts.get(op, 0) + 1
        return outs

    def const_i64(self, name: str, value: int | list[int]) -> str:
        full = f"/const/{name}"
        if full not in self._consts:
            self._consts.add(full)
            self.sink.add(full, np.asarray(value, dtype=np.int64))
        return full

    def float_tensor(self, name: str, t: torch.Tensor) -> str:
        self.sink.add(name, t.detach().to(torch.float32).numpy().astype(self.np_dtype, copy=False))
        return name

    def linear(self, name: str, x: str, weight: Callable[[], torch.Tensor], bias: torch.Tensor | None,
               bits: int | None, swiglu: bool = False) -> str:
        """x @ W.T (+ bias), W = weight() [N, K] in torch layout; MatMulNBits when bits is set (LinearQ4 when the plan
        runs them in edgekit's kernel), else MatMul. W is made only if needed (the quantize stage may have packed it
        already). swiglu: x is [..., 2K] and the linear reads silu(x[..., :K]) * x[..., K:] (LinearQ4 only)."""
        if self.grid_tiled(name):
            return self.grid_tiled_linear(name, x, self.grids[name], bias, swiglu)
        if self.grid_q8(name) and not swiglu:
            y = self.grid_q8_linear(name, x, self.grids[name])
            return y if bias is None else self.node("Add", [y, self.float_tensor(f"{name}.bias", bias)],
                                                    f"{name}/Add")[0]
        if name in self.grids:
            if swiglu:
                raise ValueError(f"{name}: a fused SwiGLU needs the edgekit kernel")
            y = self.grid_linear(name, x, self.grids[name])
            return y if bias is None else self.node("Add", [y, self.float_tensor(f"{name}.bias", bias)],
                                                    f"{name}/Add")[0]
        if self.plan.tiled(bits):
            return self.tiled_linear(name, x, weight, bias, swiglu)
        if swiglu:
            raise ValueError(f"{name}: a fused SwiGLU needs the edgekit kernel")
        if bits is None:
            w_t = weight().T.contiguous()
            k, n = w_t.shape
            y = self.node("MatMul", [x, self.float_tensor(f"{name}.weight_T", w_t)], f"{name}/MatMul")[0]
        else:
            packed, scales = self.packed.pop(name, None) or _pack(weight(), bits, self.plan.block_size)
            n, k = packed.shape[0], self.k_dims[name]
            if f"{name}.weight_Q{bits}" not in self.shared:
                self.sink.add(f"{name}.weight_Q{bits}", packed)
            self.sink.add(f"{name}.weight_scales", scales.astype(self.np_dtype))
            y = self.node("MatMulNBits", [x, f"{name}.weight_Q{bits}", f"{name}.weight_scales"], f"{name}/MatMulNBits",
                          domain="com.microsoft", K=k, N=n, bits=bits, block_size=self.plan.block_size,
                          accuracy_level=self.plan.accuracy_level)[0]
        if bias is not None:
            y = self.node("Add", [y, self.float_tensor(f"{name}.bias", bias)], f"{name}/Add")[0]
        return y

    def grid_tiled(self, name: str) -> bool:
        """Whether grid `name` runs in edgekit's LinearQ4 (linear_kernel 'edgekit', a 4-bit grid)."""
        return self.plan.edgekit_kernel and name in self.grids and self.grids[name].bits == 4

    def grid_tiled_tensors(self, name: str, grid: Any) -> list[str]:
        """The grid's codes, fp16 scales (and minimums) in the kernel's tiled layout, written once: LinearQ4 and, for
        a tied or quantized embedding, GatherQ4 read the same tensors. No row sums: per-group activations (the only
        kind the ONNX graph runs) are symmetric and never read them."""
        from edgekit.kernels import q4

        data, s16, mins = f"{name}.weight_T4", f"{name}.weight_T4_scales", f"{name}.weight_T4_mins"
        codes, scales, grid_mins = grid.kernel_form()
        if data not in self.shared:
            packed = q4.pack(codes, scales, grid.group, mins=grid_mins, scale_dtype=torch.float16)
            self.sink.add(data, packed[0].numpy())
            self.sink.add(s16, packed[1].numpy())
            if grid_mins is not None:
                self.sink.add(mins, packed[3].numpy())
            self.shared.add(data)
        return [data, s16] + ([mins] if grid_mins is not None else [])

    def grid_tiled_linear(self, name: str, x: str, grid: Any, bias: torch.Tensor | None, swiglu: bool) -> str:
        """LinearQ4 on the file's codes: fp16 scales (and minimums, for an asymmetric grid: GGUF's d and m exactly),
        int8 activations per group, as llama.cpp runs a Q4_1 x Q8_1 product."""
        n, k = grid.shape
        tensors = self.grid_tiled_tensors(name, grid)
        inputs = [x, tensors[0], tensors[1], "", self.float_tensor(f"{name}.bias", bias) if bias is not None else ""]
        inputs += tensors[2:]
        while inputs[-1] == "":
            inputs.pop()
        return self.node("LinearQ4", inputs, f"{name}/LinearQ4", domain=KERNEL_DOMAIN, K=k, N=n,
                         group_size=grid.group, swiglu=int(swiglu), act_per_group=1)[0]

    def grid_q8(self, name: str) -> bool:
        """Whether grid `name` runs in edgekit's LinearQ8 / GatherQ8 (linear_kernel 'edgekit'; an 8-bit grid with the
        default zero point and no correction, e.g. GGUF's Q8_0): its fp16 scales are stored once, for both ops."""
        grid = self.grids.get(name)
        return (self.plan.edgekit_kernel and grid is not None and grid.bits == 8 and grid.default_zero
                and grid.correction is None)

    def grid_q8_tensors(self, name: str, grid: Any) -> tuple[str, str]:
        """The 8-bit codes (MatMulNBits' layout) and fp16 scales [N, K/group], written once."""
        scales = f"{name}.weight_scales_fp16"
        data = self.grid_data(name, grid)
        if scales not in self.shared:
            self.sink.add(scales, grid.scales.astype(np.float16))
            self.shared.add(scales)
        return data, scales

    def grid_q8_linear(self, name: str, x: str, grid: Any) -> str:
        data, scales = self.grid_q8_tensors(name, grid)
        return self.node("LinearQ8", [x, data, scales], f"{name}/LinearQ8", domain=KERNEL_DOMAIN, K=grid.shape[1],
                         N=grid.shape[0], group_size=grid.group)[0]

    def grid_data(self, name: str, grid: Any) -> str:
        """The grid's packed codes, written once (a tied output layer's also serve the embedding)."""
        data = f"{name}.weight_Q{grid.bits}"
        if data not in self.shared:
            self.sink.add(data, grid.packed())
            self.shared.add(data)
        return data

    def grid_linear(self, name: str, x: str, grid: Any) -> str:
        """MatMulNBits on the checkpoint's own codes and scales (+ uint8 zero points where a code was widened), plus,
        for an asymmetric grid, the per-group correction: ReduceSum of x per group, then a small MatMul."""
        n, k = grid.shape[0], grid.in_features
        if name in self.gather_scales:   # the embedding's [N, K/g, 1] scales, viewed as MatMulNBits' [N, K/g]
            scales = self.node("Reshape", [self.gather_scales[name], self.const_i64(
                f"shape_{n}_{grid.scales.shape[1]}", [n, grid.scales.shape[1]])], f"{name}/scales_2d")[0]
        else:
            scales = self.float_tensor(f"{name}.weight_scales", torch.from_numpy(grid.scales))
        inputs = [x, self.grid_data(name, grid), scales]
        if not grid.default_zero:
            inputs.append(f"{name}.weight_zero_points")
            self.sink.add(inputs[-1], grid.packed_zero_points())
        y = self.node("MatMulNBits", inputs, f"{name}/MatMulNBits", domain="com.microsoft", K=k, N=n, bits=grid.bits,
                      block_size=grid.group, accuracy_level=grid_accuracy_level(grid, self.plan))[0]
        if grid.correction is None:
            return y
        if grid.in_features % grid.group:
            raise ValueError(f"{name}: a grid with minimums needs a group size dividing K={k}, not {grid.group}")
        groups = k // grid.group
        xg = self.node("Reshape", [x, self.const_i64(f"shape_0_0_{groups}_{grid.group}", [0, 0, groups, grid.group])],
                       f"{name}/group_sum/Reshape")[0]
        sums = self.node("ReduceSum", [xg, self.const_i64("axes_minus_1", [-1])], f"{name}/group_sum", keepdims=0)[0]
        corr = self.float_tensor(f"{name}.weight_correction_T", torch.from_numpy(grid.correction.T.copy()))
        fix = self.node("MatMul", [sums, corr], f"{name}/correction")[0]
        return self.node("Add", [y, fix], f"{name}/corrected")[0]

    def tiled_tensors(self, name: str, weight: Callable[[], torch.Tensor]) -> tuple[str, str]:
        """The tiled int4 codes and scales of `name`, written once (an output layer's serve the embedding too). The
        row sums pack_tiled also gives are dropped: LinearQ4 reads them only for per-token (asymmetric) activations,
        and the graph runs per-group ones (act_per_group=1)."""
        data, scales = f"{name}.weight_T4", f"{name}.weight_T4_scales"
        if data not in self.shared:
            packed, s16, _ = self.packed.pop(name, None) or pack_tiled(weight(), self.plan.block_size)
            self.sink.add(data, packed)
            self.sink.add(scales, s16, dtype=TensorProto.BFLOAT16)
            self.shared.add(data)
        return data, scales

    def tiled_linear(self, name: str, x: str, weight: Callable[[], torch.Tensor], bias: torch.Tensor | None,
                     swiglu: bool) -> str:
        data, scales = self.tiled_tensors(name, weight)
        inputs = [x, data, scales] + (["", self.float_tensor(f"{name}.bias", bias)] if bias is not None else [])
        return self.node("LinearQ4", inputs, f"{name}/LinearQ4", domain=KERNEL_DOMAIN, K=self.k_dims[name],
                         N=self.out_dims[name], group_size=self.plan.block_size, swiglu=int(swiglu),
                         act_per_group=1)[0]

    def rms_norm(self, name: str, x: str, weight: torch.Tensor) -> str:
        return self.node("SimplifiedLayerNormalization", [x, self.float_tensor(f"{name}.weight", weight)], name,
                         axis=-1, epsilon=self.cfg.rms_norm_eps, stash_type=1)[0]

    def skip_rms_norm(self, name: str, x: str, skip: str, weight: torch.Tensor) -> tuple[str, str]:
        """RMSNorm(x + skip) and x + skip (the new residual), one fused kernel."""
        outs = self.node("SkipSimplifiedLayerNormalization", [x, skip, self.float_tensor(f"{name}.weight", weight)],
                         name, n_out=4, domain="com.microsoft", epsilon=self.cfg.rms_norm_eps)
        return outs[0], outs[3]


def linear_table(cfg: ModelConfig, w: dict[str, torch.Tensor], plan: QuantPlan
                 ) -> Iterator[tuple[str, Callable[[], torch.Tensor], int, int | None]]:
    """Every linear of the graph once: (name, make-weight [N, K], K, bits). Q/K/V and gate/up are fused."""
    for i in range(cfg.num_layers):
        a, f = f"layers.{i}.attention.", f"layers.{i}.feed_forward."
        yield (f"/model/layers.{i}/attn/qkv_proj",
               lambda a=a: torch.cat([w[a + "wq.weight"], w[a + "wk.weight"], w[a + "wv.weight"]]),
               cfg.hidden_size, plan.linear_bits)
        yield f"/model/layers.{i}/attn/o_proj", lambda a=a: w[a + "wo.weight"], cfg.q_dim, plan.linear_bits
        yield (f"/model/layers.{i}/mlp/gate_up_proj", lambda f=f: torch.cat([w[f + "w1.weight"], w[f + "w3.weight"]]),
               cfg.hidden_size, plan.linear_bits)
        yield f"/model/layers.{i}/mlp/down_proj", lambda f=f: w[f + "w2.weight"], cfg.intermediate_size, plan.linear_bits
    out = "tok_embeddings.weight" if cfg.tie_word_embeddings else "output.weight"
    yield "/lm_head", lambda: w[out], cfg.hidden_size, plan.output_bits


def out_features(cfg: ModelConfig) -> dict[str, int]:
    """N of every linear of linear_table()."""
    n = {"/lm_head": cfg.vocab_size}
    for i in range(cfg.num_layers):
        n[f"/model/layers.{i}/attn/qkv_proj"] = cfg.q_dim + 2 * cfg.kv_dim
        n[f"/model/layers.{i}/attn/o_proj"] = cfg.hidden_size
        n[f"/model/layers.{i}/mlp/gate_up_proj"] = 2 * cfg.intermediate_size
        n[f"/model/layers.{i}/mlp/down_proj"] = cfg.hidden_size
    return n


def _pack(weight: torch.Tensor, bits: int, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Packs in chunks of rows, converting each chunk to float32 only when it is packed (bf16 checkpoints stay bf16)."""
    w, rows = weight.detach(), 8192
    if w.shape[0] <= rows:
        return pack_blockwise(w.float().numpy(), bits, block_size)
    parts = [pack_blockwise(w[r:r + rows].float().numpy(), bits, block_size) for r in range(0, w.shape[0], rows)]
    return np.concatenate([p for p, _ in parts]), np.concatenate([s for _, s in parts])


def quantize_weights(cfg: ModelConfig, w: dict[str, torch.Tensor], plan: QuantPlan,
                     skip: set[str] | None = None) -> dict[str, tuple]:
    """The quantize stage: block-wise packing of every quantized linear and of the embedding table (edgekit's tiled
    layout for what its kernel runs, MatMulNBits' layout otherwise); `skip`: linears that come as grids instead."""
    def pack(weight: torch.Tensor, bits: int) -> tuple:
        return pack_tiled(weight, plan.block_size) if plan.tiled(bits) else _pack(weight, bits, plan.block_size)

    packed = {name: pack(make(), bits) for name, make, _, bits in linear_table(cfg, w, plan)
              if bits is not None and name not in (skip or ())}
    if plan.embedding_bits is not None and not shares_embedding_table(cfg, plan):
        packed["/model/embed_tokens"] = pack(w["tok_embeddings.weight"], plan.embedding_bits)
    return packed


def build_graph(cfg: ModelConfig, weights: dict[str, torch.Tensor], plan: QuantPlan, sink: TensorSink,
                max_seq_len: int, last_logits_only: bool, kv: FloatKVCache, packed: dict[str, tuple],
                grids: dict[str, Any] | None = None) -> tuple[onnx.ModelProto, dict[str, int]]:
    """The whole decoder as an ONNX model (initializers written through `sink`; `packed` is consumed; `grids` are the
    checkpoint's own quantized linears for quant 'source')."""
    g = GraphBuilder(cfg, plan, sink, max_seq_len, last_logits_only, packed=packed, grids=dict(grids or {}))
    table = {name: (make, bits) for name, make, k, bits in linear_table(cfg, weights, plan)}
    g.k_dims = {name: k for name, _, k, _ in linear_table(cfg, weights, plan)}
    g.out_dims = out_features(cfg)
    g.inputs += [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
                 helper.make_tensor_value_info("attention_mask", TensorProto.INT64,
                                               ["batch_size", "total_sequence_length"])]
    logits_len = 1 if last_logits_only else "sequence_length"
    g.outputs.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                                   ["batch_size", logits_len, cfg.vocab_size]))
    kv.declare_io(g, cfg)
    mask_to_gqa_lengths(g)
    _rope_caches(g, max_seq_len)

    def lin(name: str, x: str, bias: torch.Tensor | None = None, swiglu: bool = False) -> str:
        make, bits = table[name]
        return g.linear(name, x, make, bias, bits, swiglu)

    x = _embedding(g, weights["tok_embeddings.weight"], table.get("/lm_head", (None, None))[0])
    if cfg.embed_scale is not None:   # Gemma: the table's rows times sqrt(hidden_size)
        x = g.node("Mul", [x, g.float_tensor("/model/embed_scale", torch.tensor(cfg.embed_scale))],
                   "/model/embed_tokens/scale")[0]
    residual, h = x, g.rms_norm("/model/layers.0/input_layernorm", x, weights["layers.0.attention_norm.weight"])
    for i in range(cfg.num_layers):
        attn = _sandwich_norm(g, f"/model/layers.{i}/post_attention_norm", _attention(g, kv, i, h, weights, lin),
                              weights.get(f"layers.{i}.post_attention_norm.weight"))
        h, residual = g.skip_rms_norm(f"/model/layers.{i}/post_attention_layernorm", attn, residual,
                                      weights[f"layers.{i}.ffn_norm.weight"])
        mlp = _sandwich_norm(g, f"/model/layers.{i}/post_feedforward_norm", _mlp(g, i, h, lin),
                             weights.get(f"layers.{i}.post_ffw_norm.weight"))
        last = i == cfg.num_layers - 1
        norm_w = weights["norm.weight"] if last else weights[f"layers.{i + 1}.attention_norm.weight"]
        name = "/model/norm" if last else f"/model/layers.{i + 1}/input_layernorm"
        h, residual = g.skip_rms_norm(name, mlp, residual, norm_w)
    if last_logits_only:
        h = g.node("Slice", [h, g.const_i64("minus_1", [-1]), g.const_i64("int_max", [2**62]),
                             g.const_i64("axes_1", [1])], "/model/last_position")[0]
    logits = lin("/lm_head", h)
    if g.elem_type != TensorProto.FLOAT:
        logits = g.node("Cast", [logits], "/lm_head/cast", to=TensorProto.FLOAT)[0]
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="/logits"))
    graph = helper.make_graph(g.nodes, "edgekit_decoder", g.inputs, g.outputs, sink.initializers)
    sink.initializers.clear()   # make_graph copied them: keep one copy of the weights, not two, while serialising
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", MS_OPSET)]
    if any(n.domain == KERNEL_DOMAIN for n in g.nodes):
        opsets.append(helper.make_opsetid(KERNEL_DOMAIN, KERNEL_OPSET))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="edgekit")
    model.ir_version = IR_VERSION
    return model, dict(g.op_counts)


def _rope_caches(g: GraphBuilder, max_seq_len: int) -> None:
    """GroupQueryAttention's cos / sin caches [max_seq_len, head_dim / 2], computed in the graph from the head_dim / 2
    frequencies (the same fp32 product position * inv_freq as edgekit.model.graph.rope_tables): ONNX Runtime folds
    these constant nodes into tables when the session loads, so the file holds 64 floats instead of
    2 * max_seq_len * head_dim / 2 (64 KB at 256 positions of SmolLM2, 1 MB at 4096). A model with sliding layers
    gets a second pair from the local frequencies (rope_inv_freq(local=True))."""
    bounds = []
    for name, value in (("start", 0.0), ("limit", float(max_seq_len)), ("delta", 1.0)):   # Range takes scalars
        bounds += g.node("Constant", [], f"/rope/{name}", value=helper.make_tensor(name, TensorProto.FLOAT, [], [value]))
    pos = g.node("Range", bounds, "/rope/positions")[0]
    pos = g.node("Unsqueeze", [pos, g.const_i64("axes_1", [1])], "/rope/positions_column")[0]
    tables = [("", False, g.cos_cache, g.sin_cache)]
    if g.cfg.has_sliding_layers:
        tables.append(("_local", True, g.cos_cache_local, g.sin_cache_local))
    for suffix, local, cos_out, sin_out in tables:
        inv_freq = f"rope_inv_freq{suffix}"   # fp32 whatever the graph's float type: the product and cos / sin as rope_tables
        g.sink.add(inv_freq, rope_inv_freq(g.cfg, local).to(torch.float32)[None].contiguous().numpy())
        freqs = g.node("Mul", [pos, inv_freq], f"/rope{suffix}/freqs")[0]
        for op, out in (("Cos", cos_out), ("Sin", sin_out)):
            y = g.node(op, [freqs], f"/rope{suffix}/{op.lower()}")[0]
            if g.elem_type != TensorProto.FLOAT:
                y = g.node("Cast", [y], f"/rope{suffix}/{op.lower()}_cast", to=g.elem_type)[0]
            g.nodes.append(helper.make_node("Identity", [y], [out], name=f"/rope/{out}"))


def shares_embedding_table(cfg: ModelConfig, plan: QuantPlan) -> bool:
    """Tied and quantized alike: the lm_head's MatMulNBits weight also serves as the GatherBlockQuantized table."""
    return cfg.tie_word_embeddings and plan.embedding_bits is not None and plan.embedding_bits == plan.output_bits


def _embedding(g: GraphBuilder, table: torch.Tensor, lm_head: Callable[[], torch.Tensor] | None = None) -> str:
    """Gather (float) or GatherBlockQuantized. The packed table is [V, H/block, block*bits/8] (H padded up to whole
    blocks with zeros, which dequantize to 0): gathered with quantize_axis=2 it gives [B, S, H/block, block], reshaped
    to [B, S, H_padded] and sliced back to H when H is not a multiple of the block (e.g. 576 = 4.5 x 128)."""
    bits, block = g.plan.embedding_bits, g.plan.block_size
    grid_name = next((n for n in ("/model/embed_tokens", "/lm_head") if n in g.grids and embeds_from(g, n)), None)
    if grid_name is not None:
        return _grid_embedding(g, grid_name, g.grids[grid_name])
    if bits is None:
        return g.node("Gather", [g.float_tensor("model.embed_tokens.weight", table), "input_ids"],
                      "/model/embed_tokens/Gather", axis=0)[0]
    vocab, hidden = table.shape
    if g.plan.tiled(bits):   # edgekit's GatherQ4 on the tiled table (the output layer's own, when they share it)
        shared = shares_embedding_table(g.cfg, g.plan)
        name = "/lm_head" if shared else "/model/embed_tokens"
        g.k_dims.setdefault(name, hidden)
        data, scales = g.tiled_tensors(name, lm_head if shared else (lambda: table))
        return g.node("GatherQ4", [data, scales, "input_ids"], "/model/embed_tokens/GatherQ4", domain=KERNEL_DOMAIN,
                      K=hidden, N=vocab, group_size=block)[0]
    if shares_embedding_table(g.cfg, g.plan):
        # one packed table for both ops (MatMulNBits insists on that 3-D shape); only the scales need their own
        # [V, H/block, 1] view
        packed, scales = g.packed["/lm_head"]
        data = f"/lm_head.weight_Q{bits}"
        g.shared.add(data)
    else:
        packed, scales = g.packed.pop("/model/embed_tokens", None) or _pack(table, bits, block)
        data = f"model.embed_tokens.weight_Q{bits}"
    g.sink.add(data, packed)
    g.sink.add("model.embed_tokens.weight_scales", scales.reshape(vocab, -1, 1).astype(g.np_dtype))
    # `bits` only when not its default 4: ONNX Runtime before 1.22 knows no such attribute and rejects the graph
    extra = {"bits": bits} if bits != 4 else {}
    rows = g.node("GatherBlockQuantized", [data, "input_ids", "model.embed_tokens.weight_scales"],
                  "/model/embed_tokens/GatherBlockQuantized", domain="com.microsoft", block_size=block,
                  gather_axis=0, quantize_axis=2, **extra)[0]
    padded = packed.shape[1] * block
    x = g.node("Reshape", [rows, g.const_i64(f"shape_0_0_{padded}", [0, 0, padded])], "/model/embed_tokens/Reshape")[0]
    if padded == hidden:
        return x
    return g.node("Slice", [x, g.const_i64("zero", [0]), g.const_i64(f"end_{hidden}", [hidden]),
                            g.const_i64("minus_1", [-1])], "/model/embed_tokens/Slice")[0]


def grid_accuracy_level(grid: Any, plan: QuantPlan) -> int:
    """8-bit grids always take int8 activations (level 4): ONNX Runtime's 8-bit CPU kernel with float activations ran
    a 576 -> 1536 decode step in 2.4 ms instead of 30 us here (mnb benchmark in benchmarks/results/onnx.md)."""
    return 4 if grid.bits == 8 else plan.accuracy_level


def embeds_from(g: GraphBuilder, name: str) -> bool:
    """Whether the embedding can gather from grid `name` as it is (GatherBlockQuantized and GatherQ8 take neither a
    correction nor, here, zero points; GatherQ4 takes a 4-bit grid's minimums): its own grid, or a tied output
    layer's."""
    grid = g.grids[name]
    if name == "/lm_head" and not g.cfg.tie_word_embeddings:
        return False
    if g.grid_tiled(name):   # GatherQ4 on the linear's own tiled tensors takes minimums too
        return True
    return grid.correction is None and grid.default_zero


def _grid_embedding(g: GraphBuilder, name: str, grid: Any) -> str:
    """The embedding on the checkpoint's own codes, reading the very tensors the output layer reads when they are
    tied (one copy of the table): edgekit's GatherQ4 (tiled, fp16 scales and minimums) or GatherQ8 (fp16 scales)
    under linear_kernel 'edgekit', else GatherBlockQuantized ([V, H/block, block*bits/8], quantize_axis 2, fp32
    scales [V, H/block, 1], which a tied MatMulNBits reads through a Reshape that ONNX Runtime folds at load)."""
    vocab, padded = grid.shape
    hidden = grid.in_features   # codes zero-padded to whole groups beyond it: sliced off after the gather
    attrs = {"K": padded, "N": vocab, "group_size": grid.group}
    if g.grid_tiled(name):
        data, s16, *mins = g.grid_tiled_tensors(name, grid)
        rows = g.node("GatherQ4", [data, s16, "input_ids", *mins], "/model/embed_tokens/GatherQ4",
                      domain=KERNEL_DOMAIN, **attrs)[0]
        return _slice_hidden(g, rows, padded, hidden)
    if g.grid_q8(name):
        data, s16 = g.grid_q8_tensors(name, grid)
        rows = g.node("GatherQ8", [data, s16, "input_ids"], "/model/embed_tokens/GatherQ8", domain=KERNEL_DOMAIN,
                      **attrs)[0]
        return _slice_hidden(g, rows, padded, hidden)
    data = g.grid_data(name, grid)
    scales = g.float_tensor("model.embed_tokens.weight_scales",
                            torch.from_numpy(grid.scales.reshape(vocab, -1, 1).copy()))
    if name == "/lm_head":
        g.gather_scales[name] = scales
    extra = {"bits": grid.bits} if grid.bits != 4 else {}
    rows = g.node("GatherBlockQuantized", [data, "input_ids", scales], "/model/embed_tokens/GatherBlockQuantized",
                  domain="com.microsoft", block_size=grid.group, gather_axis=0, quantize_axis=2, **extra)[0]
    x = g.node("Reshape", [rows, g.const_i64(f"shape_0_0_{padded}", [0, 0, padded])], "/model/embed_tokens/Reshape")[0]
    return _slice_hidden(g, x, padded, hidden)


def _slice_hidden(g: GraphBuilder, x: str, padded: int, hidden: int) -> str:
    if padded == hidden:
        return x
    return g.node("Slice", [x, g.const_i64("zero", [0]), g.const_i64(f"end_{hidden}", [hidden]),
                            g.const_i64("minus_1", [-1])], "/model/embed_tokens/Slice")[0]


def _attention(g: GraphBuilder, kv: FloatKVCache, i: int, h: str, w: dict[str, torch.Tensor], lin: Callable) -> str:
    cfg, p = g.cfg, f"layers.{i}.attention."
    name = f"/model/layers.{i}/attn"
    qkv_b = torch.cat([w[p + "wq.bias"], w[p + "wk.bias"], w[p + "wv.bias"]]) if cfg.attention_bias else None
    qkv = lin(f"{name}/qkv_proj", h, qkv_b)
    if not cfg.qk_norm:
        out = kv.emit(g, cfg, i, qkv, None, None)          # packed QKV into GQA
    else:
        # q/k RMSNorm per head (Qwen3): ORT's CPU GQA rejects its q_norm_weight input, so normalise explicitly
        q, k, v = g.node("Split", [qkv, g.const_i64(f"qkv_split_{cfg.q_dim}_{cfg.kv_dim}",
                                                     [cfg.q_dim, cfg.kv_dim, cfg.kv_dim])], f"{name}/qkv_split",
                         n_out=3, axis=-1)
        q = _head_norm(g, f"{name}/q_norm", q, cfg.num_heads, w[p + "q_norm.weight"])
        k = _head_norm(g, f"{name}/k_norm", k, cfg.num_kv_heads, w[p + "k_norm.weight"])
        out = kv.emit(g, cfg, i, q, k, v)
    return lin(f"{name}/o_proj", out)


def _head_norm(g: GraphBuilder, name: str, x: str, heads: int, weight: torch.Tensor) -> str:
    d = g.cfg.head_dim
    per_head = g.node("Reshape", [x, g.const_i64(f"shape_0_0_{heads}_{d}", [0, 0, heads, d])], f"{name}/Reshape")[0]
    normed = g.rms_norm(name, per_head, weight)
    return g.node("Reshape", [normed, g.const_i64(f"shape_0_0_{heads * d}", [0, 0, heads * d])],
                  f"{name}/Reshape_back")[0]


def _sandwich_norm(g: GraphBuilder, name: str, x: str, weight: torch.Tensor | None) -> str:
    """Gemma's RMSNorm on the far side of attention / the MLP, before the residual add (x as it is without one)."""
    return x if not g.cfg.sandwich_norms else g.rms_norm(name, x, weight)


def _mlp(g: GraphBuilder, i: int, h: str, lin: Callable) -> str:
    name, inter = f"/model/layers.{i}/mlp", g.cfg.intermediate_size
    gate_up = lin(f"{name}/gate_up_proj", h)
    # LinearQ4 applies silu(gate) * up itself; any other activation (Gemma's GeGLU) runs before a plain LinearQ4
    fused = g.plan.tiled(g.plan.linear_bits) or g.grid_tiled(f"{name}/down_proj")
    if fused and g.cfg.hidden_act == "silu":
        return lin(f"{name}/down_proj", gate_up, swiglu=True)
    gate, up = g.node("Split", [gate_up, g.const_i64(f"split_{inter}_{inter}", [inter, inter])], f"{name}/split",
                      n_out=2, axis=-1)
    if g.cfg.hidden_act == "gelu_tanh":   # com.microsoft FastGelu is the tanh approximation (fp32 and fp16 on CPU)
        act = g.node("FastGelu", [gate], f"{name}/act/FastGelu", domain="com.microsoft")[0]
    elif g.cfg.hidden_act == "silu":
        act = g.node("Mul", [gate, g.node("Sigmoid", [gate], f"{name}/act/Sigmoid")[0]], f"{name}/act/Mul")[0]
    else:
        raise ValueError(f"hidden_act {g.cfg.hidden_act!r} has no ONNX lowering; accepted: 'silu', 'gelu_tanh'")
    act = g.node("Mul", [act, up], f"{name}/Mul")[0]
    return lin(f"{name}/down_proj", act)


def estimate_initializer_bytes(cfg: ModelConfig, plan: QuantPlan) -> int:
    """Bytes the initializers will take, before building: decides embedded vs external data up front."""
    def nbytes(params: int, bits: int | None) -> int:
        if bits is None:
            return params * (2 if plan.float_dtype == "fp16" else 4)
        return params * bits // 8 + params // plan.block_size * (2 if plan.float_dtype == "fp16" else 4)

    emb = cfg.vocab_size * cfg.hidden_size
    body = cfg.num_parameters - emb * (1 if cfg.tie_word_embeddings else 2)
    return nbytes(body, plan.linear_bits) + nbytes(emb, plan.embedding_bits) + nbytes(emb, plan.output_bits)

