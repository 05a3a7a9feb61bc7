"""What onnxruntime's CPU GroupQueryAttention does with an int8 KV cache (why the ONNX int8 cache is plain ops), pinned as tests.

Finding with onnxruntime 1.32: int8 caches RUN on CPU with k_quant_type/v_quant_type PER_TENSOR or PER_CHANNEL,
kv_cache_bit_width=8 and k_scale/v_scale inputs, and match attention over the dequantized caches; the new K/V are
quantized with those same static scales (round(x / scale)). There is no per-token mode, so edgekit::attention's
dynamic scale per (position, kv head) cannot be expressed through GQA: that needs our own ORT custom op (or
calibrated static per-channel scales, a different scheme). uint8 caches fail on CPU."""
from __future__ import annotations

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper

B, T, HQ, HKV, D, S, PAST = 1, 2, 4, 2, 64, 16, 7


def gqa_model(quant: str, scale_shape: list[int]) -> bytes:
    inputs = ["query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length",
              "", "", "", "", "", "k_scale", "v_scale"]
    node = helper.make_node("GroupQueryAttention", inputs, ["output", "present_key", "present_value"],
                            domain="com.microsoft", num_heads=HQ, kv_num_heads=HKV, k_quant_type=quant,
                            v_quant_type=quant, kv_cache_bit_width=8)
    f, i8 = TensorProto.FLOAT, TensorProto.INT8
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(
        [node], "gqa_int8",
        [vi("query", f, [B, T, HQ * D]), vi("key", f, [B, T, HKV * D]), vi("value", f, [B, T, HKV * D]),
         vi("past_key", i8, [B, HKV, S, D]), vi("past_value", i8, [B, HKV, S, D]),
         vi("seqlens_k", TensorProto.INT32, [B]), vi("total_sequence_length", TensorProto.INT32, []),
         vi("k_scale", f, scale_shape), vi("v_scale", f, scale_shape)],
        [vi("output", f, None), vi("present_key", i8, None), vi("present_value", i8, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    return model.SerializeToString()


def reference(q, k_all, v_all):
    rep, out = HQ // HKV, np.zeros((T, HQ, D), np.float32)
    qh = q[0].reshape(T, HQ, D)
    n = k_all.shape[1]
    causal = np.arange(n)[None, :] <= (n - T + np.arange(T))[:, None]
    for h in range(HQ):
        s = np.where(causal, qh[:, h] @ k_all[h // rep].T / np.sqrt(D), -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        out[:, h] = (p / p.sum(-1, keepdims=True)) @ v_all[h // rep]
    return out.reshape(1, T, HQ * D)


@pytest.mark.parametrize("quant,scale_shape", [("PER_TENSOR", [1]), ("PER_CHANNEL", [1, HKV, 1, D])])
def test_ort_cpu_gqa_runs_int8_cache_with_static_scales(quant, scale_shape):
    rng = np.random.default_rng(0)
    sess = ort.InferenceSession(gqa_model(quant, scale_shape), providers=["CPUExecutionProvider"])
    pk, pv = np.zeros((2, B, HKV, S, D), np.int8)
    pk[:, :, :PAST] = rng.integers(-127, 128, (B, HKV, PAST, D))
    pv[:, :, :PAST] = rng.integers(-127, 128, (B, HKV, PAST, D))
    ks, vs = (rng.random(scale_shape) * 0.05 + 0.01).astype(np.float32), (rng.random(scale_shape) * 0.05 + 0.01
                                                                          ).astype(np.float32)
    q, k, v = (rng.standard_normal((B, T, h * D)).astype(np.float32) for h in (HQ, HKV, HKV))
    out, present_k, _ = sess.run(None, {
        "query": q, "key": k, "value": v, "past_key": pk, "past_value": pv,
        "seqlens_k": np.array([PAST + T - 1], np.int32), "total_sequence_length": np.array(PAST + T, np.int32),
        "k_scale": ks, "v_scale": vs})
    kscale = np.broadcast_to(ks.reshape(1, -1, 1, D) if quant == "PER_CHANNEL" else ks, (1, HKV, 1, D))[0, :, 0]
    vscale = np.broadcast_to(vs.reshape(1, -1, 1, D) if quant == "PER_CHANNEL" else vs, (1, HKV, 1, D))[0, :, 0]
    new_k = np.clip(np.round(k.reshape(T, HKV, D).transpose(1, 0, 2) / kscale[:, None]), -128, 127)
    new_v = np.clip(np.round(v.reshape(T, HKV, D).transpose(1, 0, 2) / vscale[:, None]), -128, 127)
    assert np.array_equal(present_k[0, :, PAST:PAST + T], new_k)  # static scales quantize the new keys
    k_all = np.concatenate([pk[0, :, :PAST], new_k], 1) * kscale[:, None]
    v_all = np.concatenate([pv[0, :, :PAST], new_v], 1) * vscale[:, None]
    assert np.abs(out - reference(q, k_all, v_all)).max() < 1e-4


def test_ort_gqa_has_no_per_token_kv_quantization():
    from onnxruntime.capi import onnxruntime_pybind11_state as C

    schema = next(s for s in C.get_all_operator_schema() if s.name == "GroupQueryAttention")
    doc = schema.attributes["k_quant_type"].description
    assert "PER_TENSOR" in doc and "PER_CHANNEL" in doc and "TOKEN" not in doc.upper()
