"""SmolLM2's GGUF vocabulary (pre-tokenizer "smollm": every digit cut apart before GPT-2's split) gives llama.cpp's
ids exactly, recorded by tests/data/make_gguf_tokenizer_ids.py; the digit samples are where a plain GPT-2 split
differs ("  99" is [ĠĠ, 9, 9], not [Ġ, Ġ, 9, 9])."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "gguf_smollm2_tokenizer_ids.json"
SAMPLES = json.loads(REFERENCE.read_text(encoding="utf-8"))["samples"]


@pytest.fixture(scope="module")
def tok(smollm2_path):
    from edgekit.model.gguf_reader import metadata, open_gguf
    from edgekit.model.tokenizer import Tokenizer

    return Tokenizer.from_gguf(metadata(open_gguf(smollm2_path)))


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_smollm2_ids_match_llama_cpp(name, tok):
    ref = SAMPLES[name]
    assert tok.encode(ref["text"]) == ref["ids"]  # exact, every id
    assert tok.encode(ref["text"], add_special_tokens=True) == ref["ids_bos"]
    assert tok.decode(ref["ids"]) == ref["text"]
