"""SmolLM2's GGUF vocabulary (pre-tokenizer "smollm": every digit cut apart before GPT-2's split) gives llama.cpp's
ids exactly, recorded by tests/data/make_gguf_tokenizer_ids.py; the digit samples are where a plain GPT-2 split
differs ("  99" is [ĠĠ, 9, 9], not [Ġ, Ġ, 9, 9]). The same vocabulary relabelled "gpt-2" and "llama-bpe" checks those splits."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "gguf_smollm2_tokenizer_ids.json"
SAMPLES = json.loads(REFERENCE.read_text(encoding="utf-8"))["samples"]


@pytest.fixture(scope="module")
def meta(smollm2_path):
    from edgekit.model.gguf_reader import metadata, open_gguf

    return metadata(open_gguf(smollm2_path))


@pytest.fixture(scope="module")
def tok(meta):
    from edgekit.model.tokenizer import Tokenizer

    assert meta["tokenizer.ggml.pre"] == "smollm"
    return Tokenizer.from_gguf(meta)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_smollm2_ids_match_llama_cpp(name, tok):
    ref = SAMPLES[name]
    assert tok.encode(ref["text"]) == ref["ids"]  # exact, every id
    assert tok.encode(ref["text"], add_special_tokens=True) == ref["ids_bos"]
    assert tok.decode(ref["ids"]) == ref["text"]


@pytest.mark.parametrize("pre", ["gpt-2", "llama-bpe"])
def test_relabelled_vocabulary_matches_llama_cpp(pre, meta):
    """The same vocabulary under another pre-tokenizer and without add_bos_token: GPT-2's split alone; Llama 3's
    split with llama.cpp's ignore_merges and its BOS-by-default."""
    from edgekit.model.tokenizer import Tokenizer

    tok = Tokenizer.from_gguf({k: v for k, v in {**meta, "tokenizer.ggml.pre": pre}.items()
                               if k != "tokenizer.ggml.add_bos_token"})
    for name, ref in SAMPLES.items():
        assert tok.encode(ref["text"]) == ref[f"ids_{pre}"], name
        assert tok.encode(ref["text"], add_special_tokens=True) == ref[f"ids_bos_{pre}"], name
    assert any(ref[f"ids_{pre}"] != ref["ids"] for ref in SAMPLES.values())  # the samples tell the splits apart
