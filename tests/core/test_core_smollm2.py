"""Real weights: SmolLM2-135M-Instruct from its Q4_1 GGUF, against transformers on the same GGUF (dequantized by
transformers itself): identical weights, and 32 greedy tokens identical on 3 prompts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_core_gguf import hf_name

from edgekit.runtime import GenerationConfig, generate

PROMPTS = [
    ("plain", "The capital of France is"),
    ("chat", "What is 12 times 7? Answer briefly."),
    ("chat", "Write a haiku about the sea."),
]
NEW_TOKENS = 32


def hf_greedy(hf, prompt_ids: list[int], n: int) -> tuple[list[int], np.ndarray]:
    """transformers' forward with its own KV cache, argmax each step (no stop token, so all n tokens compare)."""
    out_ids = []
    with torch.no_grad():
        out = hf(torch.tensor([prompt_ids]), use_cache=True)
        first = out.logits[0, -1].numpy().copy()
        for _ in range(n):
            out_ids.append(int(out.logits[0, -1].argmax()))
            out = hf(torch.tensor([[out_ids[-1]]]), past_key_values=out.past_key_values, use_cache=True)
    return out_ids, first


def prompt_ids(model, kind: str, text: str) -> list[int]:
    tok = model.tokenizer
    if kind == "chat":
        return tok.encode(tok.apply_chat_template([{"role": "user", "content": text}]))
    return tok.encode(text, add_special_tokens=True)


def test_weights_identical_to_transformers_dequant(smollm2, smollm2_hf):
    state = smollm2_hf.state_dict()
    assert smollm2.config.tie_word_embeddings and smollm2.source_quant_type == "Q4_1"
    for canon, w in smollm2.weights.items():
        assert torch.equal(w, state[hf_name(canon)]), canon


@pytest.mark.parametrize("kind,text", PROMPTS)
def test_greedy_tokens_identical_to_transformers(kind, text, smollm2, smollm2_hf):
    ids = prompt_ids(smollm2, kind, text)
    want, first_logits = hf_greedy(smollm2_hf, ids, NEW_TOKENS)
    session = smollm2.session(max_seq_len=160, last_logits_only=True)
    got = generate(session, ids, GenerationConfig(max_new_tokens=NEW_TOKENS, stop_ids=(-1,)))
    assert got.token_ids == want, (smollm2.tokenizer.decode(got.token_ids), smollm2.tokenizer.decode(want))
    session.reset()
    ours_first = session.forward(np.asarray([ids]), np.arange(len(ids)))[0, -1]
    assert np.abs(ours_first - first_logits).max() <= 1e-3  # fp32, 30 layers of real weights
