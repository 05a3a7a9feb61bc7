"""GGUF loading against transformers' own GGUF loader, on tiny checkpoints converted like llama.cpp converts them.

Every supported tensor type appears in one file (mixed per tensor, as llama.cpp's Q4_K_M-style mixes do); the weights
must come out bit-identical to what transformers dequantizes, and the logits within 1e-4 (fp32).
"""
from __future__ import annotations

import pytest
import torch
from gguf import GGMLQuantizationType as Q
from test_core_parity import TOL, edgekit_logits, random_tokens, reference_logits

import edgekit
from edgekit.model.families import HF_NAMES
from edgekit.model.gguf_reader import SUPPORTED_TYPES

MIXED = {"token_embd.weight": Q.Q8_0, "attn_q.weight": Q.Q4_0, "attn_k.weight": Q.Q4_1, "attn_v.weight": Q.Q5_0,
         "attn_output.weight": Q.Q5_1, "ffn_gate.weight": Q.F16, "ffn_up.weight": Q.BF16, "ffn_down.weight": Q.Q4_1,
         "output.weight": Q.Q8_0}
GGUF_CASES = ["llama_tied", "qwen2", "qwen3"]  # permuted q/k (llama), qkv bias, q/k norm; tied and untied


def hf_name(canon: str) -> str:
    if canon.startswith("layers."):
        _, i, rest = canon.split(".", 2)
        return HF_NAMES[f"layers.{{i}}.{rest}"].format(i=i)
    return HF_NAMES[canon]


def test_mixed_file_covers_every_supported_type():
    # K-quant rows are whole 256-blocks, wider than these tiny models: tests/core/test_quant_gguf.py covers them
    k_quants = {t for t in SUPPORTED_TYPES if t.endswith("_K")}
    assert {t.name for t in MIXED.values()} | {"F32"} == set(SUPPORTED_TYPES) - k_quants


@pytest.mark.parametrize("case", GGUF_CASES)
def test_gguf_matches_transformers_gguf_loader(case, ckpt, tiny_gguf, hf_model):
    folder, name = tiny_gguf(case, "mixed", types=MIXED)
    model = edgekit.load(folder / name)
    hf = hf_model(folder, name, config_from=ckpt(case) if case == "qwen3" else None)
    state = hf.state_dict()
    for canon, w in model.weights.items():
        assert torch.equal(w, state[hf_name(canon)].float()), f"{case}: {canon} differs from transformers' dequant"
    tokens = random_tokens(model.config.vocab_size, seed=2)
    diff = (edgekit_logits(model, tokens) - reference_logits(hf, tokens)).abs().max().item()
    assert diff <= TOL, f"{case}: max |Δlogit| {diff:.3g}"
    assert model.source_format == "gguf" and model.source_quant_type in {"Q4_1", "Q8_0", "Q4_0"}


@pytest.mark.parametrize("case", GGUF_CASES + ["llama"])
def test_gguf_config_equals_hf_config(case, ckpt, tiny_gguf):
    """The same model read from config.json and from GGUF metadata gives the same ModelConfig (bar provenance)."""
    hf_cfg = edgekit.load(ckpt(case)).config
    folder, name = tiny_gguf(case, "f32")
    gg_cfg = edgekit.load(folder / name).config
    skip = {"stored_dtype", "rope_scaling", "rope_freq_factors", "bos_token_id", "eos_token_ids"}
    a = {k: v for k, v in hf_cfg.to_dict().items() if k not in skip}
    b = {k: v for k, v in gg_cfg.to_dict().items() if k not in skip}
    assert a == pytest.approx(b)
    assert gg_cfg.stored_dtype == "F32"
    assert gg_cfg.eos_token_ids == hf_cfg.eos_token_ids


def test_gguf_llama3_rope_scaling_and_permutation_match_hf_folder(ckpt, tiny_gguf, hf_model):
    """Llama with llama3 rope scaling: llama.cpp stores it as rope_freqs.weight and permutes q/k; the result must
    match transformers on the original HF folder (transformers' GGUF loader ignores rope_freqs, so it is no reference)."""
    folder, name = tiny_gguf("llama", "f32")
    model = edgekit.load(folder / name)
    assert model.config.rope_freq_factors is not None and max(model.config.rope_freq_factors) == 8.0
    tokens = random_tokens(model.config.vocab_size, seed=3)
    ref = reference_logits(hf_model(ckpt("llama")), tokens)
    diff = (edgekit_logits(model, tokens, max_seq_len=128) - ref).abs().max().item()
    assert diff <= TOL, f"max |Δlogit| {diff:.3g}"
    hf = edgekit.load(ckpt("llama"))
    for canon in ("layers.0.attention.wq.weight", "layers.1.attention.wk.weight"):
        assert torch.equal(model.weights[canon], hf.weights[canon]), f"{canon}: q/k permutation not undone"


def test_gguf_tokenizer_and_template_from_metadata(ckpt, tiny_gguf):
    folder, name = tiny_gguf("qwen2", "f32")
    model = edgekit.load(folder / name)
    hf_tok = edgekit.load(ckpt("qwen2")).tokenizer
    tok = model.tokenizer
    assert tok.chat_template == hf_tok.chat_template
    text = "Hello <|im_start|>user\nÉdition 東京 🙂<|im_end|>"
    assert tok.encode(text) == hf_tok.encode(text)
    assert model.stop_ids == (hf_tok.token_to_id("<|im_end|>"),)


@pytest.mark.parametrize("case", ["llama_tied", "qwen3"])
def test_header_parser_matches_gguf_reader(case, tiny_gguf):
    """edgekit's fast GGUF header parser gives the same metadata and tensor views as gguf.GGUFReader."""
    import numpy as np
    from gguf import GGUFReader

    from edgekit.model.gguf_reader import metadata, open_gguf

    folder, name = tiny_gguf(case, "mixed", types=MIXED)
    ours, ref = open_gguf(folder / name), GGUFReader(folder / name)
    want = {k: f.contents() for k, f in ref.fields.items() if not k.startswith("GGUF.")}
    assert metadata(ours) == want
    assert [t.name for t in ours.tensors] == [t.name for t in ref.tensors]
    for a, b in zip(ours.tensors, ref.tensors):
        assert (a.tensor_type, list(a.shape), a.data_offset, a.n_bytes) == (b.tensor_type, list(b.shape),
                                                                            b.data_offset, b.n_bytes)
        assert a.data.dtype == b.data.dtype and np.array_equal(a.data, b.data)
