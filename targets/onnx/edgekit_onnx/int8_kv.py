"""The int8 KV cache in plain ONNX + com.microsoft.RotaryEmbedding: edgekit::update_int8_cache and edgekit::attention
written as standard ops, so any ONNX Runtime build runs it with nothing to compile or ship.

Why this route: onnxruntime 1.32's CPU GroupQueryAttention runs int8 caches only with static PER_TENSOR/PER_CHANNEL
scales (pinned in tests/kernels/test_ort_gqa_int8.py), not edgekit's dynamic scale per (position, kv head); an ORT
custom-op library needs ONNX Runtime's C API header, which no package reachable from this machine ships.

Per layer, with the cache as explicit inputs/outputs (bound in place by the standalone session, like the float cache):
  past_key_values.N.key / .value              int8    [B, Hkv, S, D]
  past_key_values.N.key_scale / .value_scale  float32 [B, Hkv, S, 1]
  1. RoPE on q and k (RotaryEmbedding, the same cos/sin tables as GQA's fused rotary), at the positions
     total_sequence_length - T + [0, T).
     Then q, k and v are multiplied by edgekit.kernels.cache_rotation(D) (orthonormal, symmetric Hadamard R;
     scores unchanged, outlier channels spread), exactly as the reference Int8CachedAttention does.
  2. Quantize the new K/V rows exactly as edgekit::update_int8_cache: scale = max|x| / 127 per (position, kv head),
     1 where that is 0; q = clamp(round_half_even(x / scale), -127, 127) (ONNX Round is half-to-even).
  3. ScatterElements along the sequence axis writes rows and scales at their positions (present.N.* outputs; with
     the output bound to the input's buffer ORT writes only the new rows).
  4. Attention over the first total_sequence_length positions, dequantized on the fly (int8 * scale), grouped-query
     heads by a [B, Hkv, rep * T, D] view of q, causal from the positions, softmax scale 1/sqrt(D); the output is
     rotated back by R (R @ R = I).
genai_config.json cannot describe these extra scale inputs, so an int8 export writes none (see artifact notes).

A sliding-window layer whose window is shorter than the cache (Gemma 3) keeps the float cache and GroupQueryAttention
with its window (attention.FloatKVCache), as the reference keeps its float ring (kernels.use_int8_kv_cache): this
lowering attends causally over every row. A softmax scale other than 1/sqrt(D) is folded into q, as there.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from onnx import TensorProto, helper

from edgekit_onnx.attention import PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE, FloatKVCache, windowed_layer

if TYPE_CHECKING:
    from edgekit.model.config import ModelConfig
    from edgekit_onnx.builder import GraphBuilder

PAST_KEY_SCALE, PAST_VALUE_SCALE = PAST_KEY + "_scale", PAST_VALUE + "_scale"
PRESENT_KEY_SCALE, PRESENT_VALUE_SCALE = PRESENT_KEY + "_scale", PRESENT_VALUE + "_scale"
QMAX = 127.0
NOTES = ("int8 KV cache: K/V stored int8 [1, Hkv, S, D] with fp32 scales [1, Hkv, S, 1] per (position, kv head) as "
         "extra inputs/outputs (past_key_values.N.key_scale / .value_scale); attention is plain ONNX ops over the "
         "dequantized cache. onnxruntime-genai's genai_config.json cannot describe the scale tensors, so none is "
         "written: run it with edgekit's standalone_session.py (or bind the caches the same way).")


@dataclass
class Int8KVCache:
    """KVCacheLowering for kv_cache="int8" (see the module docstring)."""

    name: str = "int8"
    _shared: dict = field(default_factory=dict)   # per-graph values computed once: positions, mask, indices

    def declare_io(self, g: GraphBuilder, cfg: ModelConfig) -> None:
        if g.elem_type != TensorProto.FLOAT:
            from edgekit.errors import UnsupportedOption

            raise UnsupportedOption("kv_cache 'int8' on target 'onnx' needs fp32 activations (quant fp32 or int4), "
                                    "not fp16")
        dims = ["batch_size", cfg.num_kv_heads]
        for i in range(cfg.num_layers):
            if windowed_layer(cfg, i, g.max_seq_len):
                FloatKVCache().declare_layer_io(g, cfg, i)
                continue
            for past, present, elem, last in ((PAST_KEY, PRESENT_KEY, TensorProto.INT8, cfg.head_dim),
                                              (PAST_VALUE, PRESENT_VALUE, TensorProto.INT8, cfg.head_dim),
                                              (PAST_KEY_SCALE, PRESENT_KEY_SCALE, TensorProto.FLOAT, 1),
                                              (PAST_VALUE_SCALE, PRESENT_VALUE_SCALE, TensorProto.FLOAT, 1)):
                g.inputs.append(helper.make_tensor_value_info(past % i, elem, [*dims, "past_sequence_length", last]))
                g.outputs.append(helper.make_tensor_value_info(present % i, elem,
                                                               [*dims, "total_sequence_length", last]))

    def emit(self, g: GraphBuilder, cfg: ModelConfig, layer: int, q: str, k: str | None, v: str | None) -> str:
        """q: [B,T,Hq*D] (or packed QKV when k and v are None) -> attention output [B,T,Hq*D]."""
        if windowed_layer(cfg, layer, g.max_seq_len):
            return FloatKVCache().emit(g, cfg, layer, q, k, v)
        sh = self._shared or self._emit_shared(g, cfg)
        name, d, hkv = f"/model/layers.{layer}/attn/int8", cfg.head_dim, cfg.num_kv_heads
        if k is None or v is None:
            q, k, v = g.node("Split", [q, g.const_i64(f"qkv_split_{cfg.q_dim}_{cfg.kv_dim}",
                                                      [cfg.q_dim, cfg.kv_dim, cfg.kv_dim])], f"{name}/qkv_split",
                             n_out=3, axis=-1)
        cos, sin = g.rope_caches(layer)
        q = g.node("RotaryEmbedding", [q, sh["position_ids"], cos, sin], f"{name}/q_rotary",
                   domain="com.microsoft", interleaved=0)[0]
        k = g.node("RotaryEmbedding", [k, sh["position_ids"], cos, sin], f"{name}/k_rotary",
                   domain="com.microsoft", interleaved=0)[0]
        if "q_factor" in sh:
            q = g.node("Mul", [q, sh["q_factor"]], f"{name}/q_scale")[0]
        bnsh = g.const_i64(f"shape_0_0_{hkv}_{d}", [0, 0, hkv, d])
        k_cache = self._write(g, f"{name}/k", k, bnsh, PAST_KEY % layer, PRESENT_KEY % layer,
                              PAST_KEY_SCALE % layer, PRESENT_KEY_SCALE % layer, sh)
        v_cache = self._write(g, f"{name}/v", v, bnsh, PAST_VALUE % layer, PRESENT_VALUE % layer,
                              PAST_VALUE_SCALE % layer, PRESENT_VALUE_SCALE % layer, sh)
        return self._attend(g, cfg, name, q, k_cache, v_cache, sh)

    def _emit_shared(self, g: GraphBuilder, cfg: ModelConfig) -> dict[str, str]:
        """positions [T] = total - T + arange(T); position_ids [1,T]; scatter indices; additive mask [rep*T, total]."""
        n, sh = "/int8_kv", self._shared
        one = g.const_i64("one", 1)     # the sink stores small constants as [1], not as scalars
        total_1d = g.node("Gather", [g.node("Shape", ["attention_mask"], f"{n}/mask_shape")[0], one],
                          f"{n}/total_1d", axis=0)[0]                                          # [1]
        t1 = g.node("Gather", [g.node("Shape", ["input_ids"], f"{n}/ids_shape")[0], one], f"{n}/t_1d", axis=0)[0]
        total, step, zero = (g.node("Squeeze", [x], f"{n}/{label}_scalar")[0]
                             for label, x in (("total", total_1d), ("one", one), ("zero", g.const_i64("zero", 0))))
        start = g.node("Squeeze", [g.node("Sub", [total_1d, t1], f"{n}/start_1d")[0]], f"{n}/start")[0]
        pos = g.node("Range", [start, total, step], f"{n}/positions")[0]                    # [T]
        sh["position_ids"] = g.node("Unsqueeze", [pos, g.const_i64("axes_0", [0])], f"{n}/position_ids")[0]
        pos_col = g.node("Reshape", [pos, g.const_i64("shape_1_1_m1_1", [1, 1, -1, 1])], f"{n}/pos_col")[0]
        hkv, d = cfg.num_kv_heads, cfg.head_dim
        for key, last in (("rows", d), ("scales", 1)):   # ScatterElements wants indices shaped like the updates
            shape = g.node("Concat", [g.const_i64(f"one_{hkv}", [1, hkv]), t1, g.const_i64(f"last_{last}", [last])],
                           f"{n}/{key}_shape", axis=0)[0]
            sh[f"idx_{key}"] = g.node("Expand", [pos_col, shape], f"{n}/idx_{key}")[0]
        sh["total_1d"] = total_1d
        keys = g.node("Range", [zero, total, step], f"{n}/key_positions")[0]                  # [total]
        pos_row = g.node("Unsqueeze", [pos, g.const_i64("axes_1", [1])], f"{n}/pos_row")[0]  # [T, 1]
        hidden = g.node("Greater", [keys, pos_row], f"{n}/future")[0]                        # [T, total]
        from edgekit.kernels import cache_rotation

        rotation = cache_rotation(cfg.head_dim)
        if rotation is not None:
            g.sink.add(f"{n}/rotation", rotation.numpy().astype(np.float32))
            sh["rotation"] = f"{n}/rotation"
        for const, value in (("neg_inf", -np.inf), ("zero_f", 0.0), ("one_f", 1.0), ("qmax", QMAX),
                             ("minus_qmax", -QMAX), ("sqrt_d", math.sqrt(cfg.head_dim))):
            g.sink.add(f"{n}/{const}", np.asarray(value, dtype=np.float32))
        # the attention divides by sqrt(D); another softmax scale (Gemma's) is folded into q, as Int8CachedAttention
        q_factor = cfg.softmax_scale * cfg.head_dim ** 0.5
        if q_factor != 1.0:
            g.sink.add(f"{n}/q_factor", np.asarray(q_factor, dtype=np.float32))
            sh["q_factor"] = f"{n}/q_factor"
        mask = g.node("Where", [hidden, f"{n}/neg_inf", f"{n}/zero_f"], f"{n}/mask")[0]
        rep = cfg.num_heads // hkv
        sh["mask"] = g.node("Tile", [mask, g.const_i64(f"tile_{rep}_1", [rep, 1])], f"{n}/mask_tiled")[0]
        return sh

    def _write(self, g: GraphBuilder, name: str, x: str, bnsh: str, past: str, present: str, past_scale: str,
               present_scale: str, sh: dict[str, str]) -> tuple[str, str]:
        """Quantize x [B,T,Hkv*D] per (position, kv head) and scatter rows + scales into the cache; returns the
        updated (int8 cache, scales) sliced to the first `total` positions."""
        rows = g.node("Transpose", [g.node("Reshape", [x, bnsh], f"{name}/bnsh")[0]], f"{name}/transpose",
                      perm=[0, 2, 1, 3])[0]                                                # [B, Hkv, T, D]
        if "rotation" in sh:
            rows = g.node("MatMul", [rows, sh["rotation"]], f"{name}/rotate")[0]
        amax = g.node("ReduceMax", [g.node("Abs", [rows], f"{name}/abs")[0]], f"{name}/amax", axes=[-1],
                      keepdims=1)[0]
        scale = g.node("Div", [amax, "/int8_kv/qmax"], f"{name}/scale_raw")[0]
        is_zero = g.node("Equal", [scale, "/int8_kv/zero_f"], f"{name}/scale_is_zero")[0]
        scale = g.node("Where", [is_zero, "/int8_kv/one_f", scale], f"{name}/scale")[0]
        q = g.node("Round", [g.node("Div", [rows, scale], f"{name}/div")[0]], f"{name}/round")[0]
        q = g.node("Max", [g.node("Min", [q, "/int8_kv/qmax"], f"{name}/clip_hi")[0], "/int8_kv/minus_qmax"],
                   f"{name}/clip_lo")[0]
        q = g.node("Cast", [q], f"{name}/cast", to=TensorProto.INT8)[0]
        g.nodes.append(helper.make_node("ScatterElements", [past, sh["idx_rows"], q], [present],
                                        name=f"{name}/scatter_rows", axis=2))
        g.nodes.append(helper.make_node("ScatterElements", [past_scale, sh["idx_scales"], scale], [present_scale],
                                        name=f"{name}/scatter_scales", axis=2))
        g.op_counts["ScatterElements"] = g.op_counts.get("ScatterElements", 0) + 2
        axes, zero = g.const_i64("axes_2", [2]), g.const_i64("zero_1d", [0])
        cache = g.node("Slice", [present, zero, sh["total_1d"], axes], f"{name}/cache_used")[0]
        scales = g.node("Slice", [present_scale, zero, sh["total_1d"], axes], f"{name}/scales_used")[0]
        return cache, scales

    def _attend(self, g: GraphBuilder, cfg: ModelConfig, name: str, q: str, k_cache: tuple[str, str],
                v_cache: tuple[str, str], sh: dict[str, str]) -> str:
        hq, hkv, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        k, v = (g.node("Mul", [g.node("Cast", [c], f"{name}/{kv}_cast", to=TensorProto.FLOAT)[0], s],
                       f"{name}/{kv}_dequant")[0] for kv, (c, s) in (("k", k_cache), ("v", v_cache)))
        qh = g.node("Transpose", [g.node("Reshape", [q, g.const_i64(f"shape_0_0_{hq}_{d}", [0, 0, hq, d])],
                                         f"{name}/q_bnsh")[0]], f"{name}/q_transpose", perm=[0, 2, 1, 3])[0]
        if "rotation" in sh:
            qh = g.node("MatMul", [qh, sh["rotation"]], f"{name}/q_rotate")[0]
        qg = g.node("Reshape", [qh, g.const_i64(f"shape_0_{hkv}_m1_{d}", [0, hkv, -1, d])], f"{name}/q_groups")[0]
        kt = g.node("Transpose", [k], f"{name}/k_t", perm=[0, 1, 3, 2])[0]
        scores = g.node("MatMul", [qg, kt], f"{name}/qk")[0]                                 # [B, Hkv, rep*T, total]
        scores = g.node("Div", [scores, "/int8_kv/sqrt_d"], f"{name}/scaled")[0]
        scores = g.node("Add", [scores, sh["mask"]], f"{name}/masked")[0]
        probs = g.node("Softmax", [scores], f"{name}/softmax", axis=-1)[0]
        y = g.node("MatMul", [probs, v], f"{name}/pv")[0]                                   # [B, Hkv, rep*T, D]
        if "rotation" in sh:
            y = g.node("MatMul", [y, sh["rotation"]], f"{name}/y_rotate_back")[0]
        y = g.node("Reshape", [y, g.const_i64(f"shape_0_{hq}_m1_{d}", [0, hq, -1, d])], f"{name}/y_heads")[0]
        y = g.node("Transpose", [y], f"{name}/y_transpose", perm=[0, 2, 1, 3])[0]          # [B, T, Hq, D]
        return g.node("Reshape", [y, g.const_i64(f"shape_0_0_{hq * d}", [0, 0, hq * d])], f"{name}/output")[0]


def update_metadata(meta: dict[str, Any], cfg: ModelConfig, max_seq_len: int) -> None:
    """artifact.json for an int8-cache export: the extra scale tensors, no genai_config, and why."""
    from edgekit.kernels import cache_rotation

    io = meta["io"]
    windowed = [i for i in range(cfg.num_layers) if windowed_layer(cfg, i, max_seq_len)]
    if windowed:   # their caches stay float32 [1, Hkv, S, D], without scales (the session binds them so)
        io["float_cache_layers"] = windowed
    io.update(cache_dtype="int8", past_key_scale=PAST_KEY_SCALE, past_value_scale=PAST_VALUE_SCALE,
              present_key_scale=PRESENT_KEY_SCALE, present_value_scale=PRESENT_VALUE_SCALE, scale_dtype="float32",
              scale_shape=[1, cfg.num_kv_heads, max_seq_len, 1])
    meta["kv_cache_storage"] = {"dtype": "int8", "scale": "fp32 per (position, kv head), absmax / 127, round half to even",
                                "rotation": ("hadamard on q, k, v; output rotated back"
                                             if cache_rotation(cfg.head_dim) is not None else None),
                        "attention": "ONNX ops over the dequantized cache (RotaryEmbedding, ScatterElements, MatMul, "
                                     "Softmax)"}
    meta.pop("genai_config", None)
    meta["notes"] = NOTES
