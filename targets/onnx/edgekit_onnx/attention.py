"""Attention lowering: KV cache inputs/outputs and one com.microsoft.GroupQueryAttention node per layer.

Kept in one module so another KV cache kind (e.g. an int8 cache through GQA's `k_quant_type` / `kv_cache_bit_width`,
or a custom op) plugs in as one more `KVCacheLowering` in LOWERINGS without touching the graph builder.

Cache layout is GQA's BNSH: past_key_values.N.key [batch, kv_heads, past_sequence_length, head_dim]. With the
"shared buffer" mode (onnxruntime-genai's past_present_share_buffer, and our standalone session) the past and present
of a layer are one buffer of max_seq_len positions, written in place by the kernel.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from onnx import TensorProto, helper

if TYPE_CHECKING:
    from edgekit.model.config import ModelConfig
    from edgekit_onnx.builder import GraphBuilder

PAST_KEY, PAST_VALUE = "past_key_values.%d.key", "past_key_values.%d.value"
PRESENT_KEY, PRESENT_VALUE = "present.%d.key", "present.%d.value"


@dataclass
class FloatKVCache:
    """A float cache (the model's activation dtype), attention through GQA with fused rotary."""

    name: str = "float"

    def declare_io(self, g: GraphBuilder, cfg: ModelConfig) -> None:
        for i in range(cfg.num_layers):
            self.declare_layer_io(g, cfg, i)

    def declare_layer_io(self, g: GraphBuilder, cfg: ModelConfig, i: int) -> None:
        for past, present in ((PAST_KEY, PRESENT_KEY), (PAST_VALUE, PRESENT_VALUE)):
            g.inputs.append(helper.make_tensor_value_info(
                past % i, g.elem_type, ["batch_size", cfg.num_kv_heads, "past_sequence_length", cfg.head_dim]))
            g.outputs.append(helper.make_tensor_value_info(
                present % i, g.elem_type, ["batch_size", cfg.num_kv_heads, "total_sequence_length", cfg.head_dim]))

    def emit(self, g: GraphBuilder, cfg: ModelConfig, layer: int, q: str, k: str | None, v: str | None) -> str:
        """q: [B,S,Hq*D] (or packed QKV when k and v are None) -> attention output [B,S,Hq*D]."""
        out = f"/model/layers.{layer}/attn/GroupQueryAttention/output_0"
        g.nodes.append(helper.make_node(
            "GroupQueryAttention",
            [q, k or "", v or "", PAST_KEY % layer, PAST_VALUE % layer, g.seqlens_k, g.total_seq_len,
             *g.rope_caches(layer)],
            [out, PRESENT_KEY % layer, PRESENT_VALUE % layer],
            name=f"/model/layers.{layer}/attn/GroupQueryAttention", domain="com.microsoft",
            num_heads=cfg.num_heads, kv_num_heads=cfg.num_kv_heads, do_rotary=1, rotary_interleaved=0,
            scale=cfg.softmax_scale, local_window_size=gqa_local_window(cfg, layer)))
        return out


def windowed_layer(cfg: ModelConfig, layer: int, max_seq_len: int) -> bool:
    """Whether `layer` attends through a window shorter than the cache (the eager graph's ring condition,
    graph.Attention); a longer window is the causal mask itself."""
    return cfg.is_sliding(layer) and cfg.sliding_window < max_seq_len


def gqa_local_window(cfg: ModelConfig, layer: int) -> int:
    """GroupQueryAttention's local_window_size for `layer`: -1 (attend to every cached position) or, for a sliding
    layer, sliding_window itself. In onnxruntime 1.32's CPU kernel, as in edgekit's (and transformers') window, the
    query's own position is one of the W it attends (distance < W): measured on a window of 6 under a 40-token
    prefill, W is exact (5e-7) and W - 1 or W + 1 are off by ~0.5 logits; tests/onnx/test_onnx_gemma3.py pins it.
    Older releases attend to one position more (export.SLIDING_WINDOW_MIN_ORT: the export says which it needs).

    The cache stays max_seq_len long on sliding layers too: GQA's shared past/present buffer has no ring mode, so
    the window only masks. So rewinding (forward at a position before the cached length) is exact however far back."""
    return cfg.sliding_window if cfg.is_sliding(layer) else -1


LOWERINGS: dict[str, type] = {"fp32": FloatKVCache}


def kv_cache_lowering(kind: str) -> FloatKVCache:
    """The lowering for TargetSpec.kv_cache; "fp32" means a cache in the activation dtype (fp32 or fp16)."""
    from edgekit.errors import UnsupportedOption

    if kind == "int8":   # int8 cache + per-(position, kv head) scales in plain ONNX ops: GroupQueryAttention has no int8 cache on CPU
        from edgekit_onnx.int8_kv import Int8KVCache

        return Int8KVCache()
    if kind not in LOWERINGS:
        raise UnsupportedOption(f"kv cache {kind!r} is not supported by target 'onnx'; supported: {', '.join(LOWERINGS)}")
    return LOWERINGS[kind]()


def mask_to_gqa_lengths(g: GraphBuilder) -> None:
    """attention_mask [B, total] -> seqlens_k int32[B] (= sum - 1) and total_sequence_length int32 scalar."""
    g.nodes += [
        helper.make_node("ReduceSum", ["attention_mask", g.const_i64("axes_1", [1])], ["/mask/sum"], keepdims=0),
        helper.make_node("Sub", ["/mask/sum", g.const_i64("one", 1)], ["/mask/sum_minus_1"]),
        helper.make_node("Cast", ["/mask/sum_minus_1"], [g.seqlens_k], to=TensorProto.INT32),
        helper.make_node("Shape", ["attention_mask"], ["/mask/shape"]),
        helper.make_node("Gather", ["/mask/shape", g.const_i64("one", 1)], ["/mask/total"], axis=0),
        helper.make_node("Cast", ["/mask/total"], [g.total_seq_len], to=TensorProto.INT32),
    ]
