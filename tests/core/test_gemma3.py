"""Gemma 3 on tiny random checkpoints (transformers' Gemma3TextConfig): its quirks read from config.json and from GGUF
metadata, the sliding window's ring cache exact against transformers at 1e-4 (fp32) when prefill and decode run past
the window, and the cache it saves counted."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from test_core_parity import TOL, edgekit_logits, random_tokens, reference_logits

import edgekit
from edgekit.errors import CheckpointError
from edgekit.model.config import RING_REWIND, ModelConfig
from edgekit.model.graph import CachedAttention, RingCachedAttention


def test_config_reads_every_gemma3_quirk(ckpt):
    cfg = edgekit.load(ckpt("gemma3")).config
    assert cfg.family == "gemma3" and cfg.architecture == "Gemma3ForCausalLM"
    assert cfg.layer_types == ("sliding_attention", "sliding_attention", "full_attention")
    assert (cfg.sliding_window, cfg.rope_theta, cfg.rope_local_theta) == (6, 1e6, 1e4)
    assert cfg.hidden_act == "gelu_tanh" and cfg.sandwich_norms and cfg.qk_norm and cfg.tie_word_embeddings
    assert cfg.embed_scale == pytest.approx(64 ** 0.5)
    assert cfg.query_scale == pytest.approx((16 + 8) ** -0.5)  # query_pre_attn_scalar, not head_dim
    assert {"sliding_window", "sandwich_norms", "embed_scale", "act_gelu_tanh", "query_scale"} <= cfg.features()


def test_norm_weights_hold_the_multiplier(ckpt):
    """Gemma's checkpoint stores w of x * (1 + w); edgekit's canonical weight is 1 + w, as llama.cpp's file stores it."""
    from safetensors.torch import load_file

    stored = load_file(str(ckpt("gemma3") / "model.safetensors"))
    model = edgekit.load(ckpt("gemma3"))
    for canon, hf in (("layers.1.post_ffw_norm.weight", "model.layers.1.post_feedforward_layernorm.weight"),
                      ("layers.0.ffn_norm.weight", "model.layers.0.pre_feedforward_layernorm.weight"),
                      ("layers.2.attention.k_norm.weight", "model.layers.2.self_attn.k_norm.weight"),
                      ("norm.weight", "model.norm.weight")):
        assert torch.equal(model.weights[canon], stored[hf] + 1), canon


def test_sliding_layers_keep_a_ring_of_window_and_rewind_rows(ckpt):
    model = edgekit.load(ckpt("gemma3"))
    dec = model.decoder(128)
    attends = [layer.attention.attend for layer in dec.layers]
    assert [type(a) for a in attends] == [RingCachedAttention, RingCachedAttention, CachedAttention]
    assert attends[0].kv_cache.k_cache.shape[1] == 6 + RING_REWIND + 1  # + the spare row for writes off the ring
    assert attends[2].kv_cache.k_cache.shape[1] == 128
    # a cache shorter than the window rows needs no ring (the causal mask is the window's); a ring never holds more
    # rows than the cache would
    assert all(type(layer.attention.attend) is CachedAttention for layer in model.decoder(6).layers)
    assert model.decoder(20).layers[0].attention.attend.slots == 20


@pytest.mark.parametrize("max_seq_len", [100, 64])  # the ring (38 rows) wraps in decode, by 62 and 26 positions
def test_prefill_past_the_window_then_decode_matches_transformers(ckpt, hf_model, max_seq_len):
    path = ckpt("gemma3")
    model = edgekit.load(path)
    tokens = random_tokens(model.config.vocab_size, seed=2, length=max_seq_len)
    ref = reference_logits(hf_model(path), tokens)
    got = edgekit_logits(model, tokens, max_seq_len=max_seq_len)
    diff = (got - ref).abs().max().item()
    assert diff <= TOL, f"max |Δlogit| {diff:.3g} > {TOL}"


@pytest.mark.parametrize("length, max_seq_len", [(60, 64), (23, 30), (6, 6)])  # (6, 6): no ring, a causal cache
def test_one_prefill_matches_transformers(ckpt, hf_model, length, max_seq_len):
    path = ckpt("gemma3")
    model = edgekit.load(path)
    tokens = random_tokens(model.config.vocab_size, seed=3, length=length)
    with torch.no_grad():
        ref = hf_model(path)(tokens).logits
        got = model.decoder(max_seq_len)(tokens, torch.arange(length))
    assert (got - ref).abs().max().item() <= TOL


@pytest.mark.parametrize("back", [1, 8, RING_REWIND])
def test_going_back_up_to_ring_rewind_positions_is_exact(ckpt, back):
    """A caller that goes back (a rejected speculative draft) rewrites positions the ring still holds: the stale
    rows at or after the position it went back to must not be attended, and the window before it must be there."""
    model = edgekit.load(ckpt("gemma3"))
    tokens = random_tokens(model.config.vocab_size, seed=4, length=100)
    other = random_tokens(model.config.vocab_size, seed=5, length=100)
    end, start = 90, 90 - back
    dec, fresh = model.decoder(128), model.decoder(128)
    with torch.no_grad():
        dec(tokens[:, :end], torch.arange(end))
        went_back = dec(other[:, start:start + 4], torch.arange(start, start + 4))
        fresh(tokens[:, :start], torch.arange(start))
        expect = fresh(other[:, start:start + 4], torch.arange(start, start + 4))
    assert (went_back - expect).abs().max().item() <= 1e-5


def test_gguf_metadata_maps_like_the_hf_config(ckpt, tiny_gguf):
    """A gemma3 GGUF converted as llama.cpp converts it (norms + 1, llama.cpp's names, its 6-layer pattern) gives
    the same config and the same logits as the checkpoint it came from."""
    folder, name = tiny_gguf("gemma3_pattern6", "f32")
    from_gguf = edgekit.load(folder / name)
    from_hf = edgekit.load(ckpt("gemma3_pattern6"))
    assert from_gguf.config.rms_norm_eps == pytest.approx(from_hf.config.rms_norm_eps)  # a float32 in the file
    keep = ("eos_token_ids", "stored_dtype", "rms_norm_eps")
    assert dataclasses.replace(from_gguf.config, **{k: getattr(from_hf.config, k) for k in keep}) == from_hf.config
    assert from_gguf.config.layer_types[5] == "full_attention" and from_gguf.config.layer_types.count("full_attention") == 1
    for canon, w in from_hf.weights.items():
        assert torch.equal(from_gguf.weights[canon], w), canon
    tokens = random_tokens(from_hf.config.vocab_size)
    assert (edgekit_logits(from_gguf, tokens) - edgekit_logits(from_hf, tokens)).abs().max().item() == 0.0


def test_kv_cache_counts_the_window_only(ckpt):
    cfg = edgekit.load(ckpt("gemma3")).config
    full = dataclasses.replace(cfg, sliding_window=None)
    # 2 sliding layers keep 6 + RING_REWIND positions, the global one 4096
    assert cfg.kv_cache_bytes(4096, "fp32") == 2 * (2 * (6 + RING_REWIND) + 4096) * cfg.kv_dim * 4
    assert full.kv_cache_bytes(4096, "fp32") == 2 * 3 * 4096 * cfg.kv_dim * 4


@pytest.mark.parametrize("field, value, accepted", [
    ("final_logit_softcapping", 30.0, "null"),
    ("attn_logit_softcapping", 50.0, "null"),
    ("hidden_activation", "gelu", "gelu_pytorch_tanh"),
    ("layer_types", ["sliding_attention", "chunked_attention", "full_attention"], "full_attention"),
    ("use_bidirectional_attention", True, "false"),
])
def test_gemma3_options_it_cannot_compute_are_refused(ckpt, field, value, accepted):
    import json

    raw = json.loads((ckpt("gemma3") / "config.json").read_text())
    with pytest.raises(CheckpointError, match=accepted) as e:
        ModelConfig.from_hf({**raw, field: value})
    assert field in str(e.value) or str(value) in str(e.value)


@pytest.mark.parametrize("target", ["android", "iot", "ios"])
def test_every_builder_declares_gemma3s_features(target):
    """All three graph builders compute Gemma 3 (tests/executorch/test_et_gemma3.py, tests/onnx/test_onnx_gemma3.py,
    tests/coreml/test_coreml_gemma3.py); a builder lacking one is refused before export (tests/core/test_capabilities)."""
    from edgekit.targets.registry import get_target

    declared = set(get_target(target).capabilities.model_features)
    assert {"act_gelu_tanh", "embed_scale", "sandwich_norms", "query_scale", "sliding_window"} <= declared


def test_info_names_the_sliding_layers_and_the_cache_they_save(ckpt):
    from edgekit.model.info import model_info

    info = model_info(edgekit.load(ckpt("gemma3")), context=4096)
    assert info["attention"] == f"2 sliding (window 6, ring of {6 + RING_REWIND} rows) + 1 full"
    assert info["kv_cache_full_context"] == pytest.approx((2 * (6 + RING_REWIND) + 4096) / (3 * 4096))
    assert model_info(edgekit.load(ckpt("qwen3")), context=4096)["attention"] == "2 full"
