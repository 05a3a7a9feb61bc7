"""Bad input: each case raises its EdgekitError subclass, naming the bad value and what is accepted."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf_files import write_raw_gguf

import edgekit
from edgekit.errors import CheckpointError, EdgekitError, TokenizerError, UnsupportedArchitecture

SUPPORTED_HF = "LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM"


@pytest.fixture
def qwen2_copy(ckpt, tmp_path):
    """A private copy of the tiny qwen2 checkpoint, to damage."""
    return shutil.copytree(ckpt("qwen2"), tmp_path / "qwen2")


def rewrite_weights(folder, edit) -> None:
    from safetensors.torch import load_file, save_file

    path = folder / "model.safetensors"
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path), metadata={"format": "pt"})


def test_path_that_does_not_exist(tmp_path):
    bad = tmp_path / "nope"
    with pytest.raises(CheckpointError) as e:
        edgekit.load(bad)
    assert str(bad) in str(e.value) and "Hugging Face folder" in str(e.value) and ".gguf" in str(e.value)


def test_folder_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError) as e:
        edgekit.load(tmp_path)
    assert "config.json" in str(e.value) and str(tmp_path) in str(e.value)


def test_unsupported_architecture(qwen2_copy):
    cfg = json.loads((qwen2_copy / "config.json").read_text())
    (qwen2_copy / "config.json").write_text(json.dumps({**cfg, "architectures": ["GPT2LMHeadModel"],
                                                        "model_type": "gpt2"}))
    with pytest.raises(UnsupportedArchitecture) as e:
        edgekit.load(qwen2_copy)
    assert "GPT2LMHeadModel" in str(e.value) and SUPPORTED_HF in str(e.value)


def test_unsupported_gguf_architecture(tmp_path):
    path = write_raw_gguf(tmp_path / "gpt2.gguf", [("token_embd.weight", np.zeros((4, 32), np.float32), Q.F32)],
                          arch="gpt2", block_count=1)
    with pytest.raises(UnsupportedArchitecture) as e:
        edgekit.load(path)
    assert "'gpt2'" in str(e.value) and "llama, qwen2, qwen3" in str(e.value)


def test_truncated_safetensors(qwen2_copy):
    path = qwen2_copy / "model.safetensors"
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size - 100)
    with pytest.raises(CheckpointError) as e:
        edgekit.load(qwen2_copy)
    assert "model.safetensors is truncated" in str(e.value) and str(size) in str(e.value)


def test_safetensors_missing_a_tensor(qwen2_copy):
    rewrite_weights(qwen2_copy, lambda s: s.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError) as e:
        edgekit.load(qwen2_copy)
    assert "misses 1 tensor" in str(e.value) and "model.layers.1.mlp.up_proj.weight" in str(e.value)


def test_safetensors_unmapped_extra_tensor(qwen2_copy):
    import torch

    rewrite_weights(qwen2_copy, lambda s: s.__setitem__("model.layers.0.mlp.extra_proj.weight", torch.zeros(2, 2)))
    with pytest.raises(CheckpointError) as e:
        edgekit.load(qwen2_copy)
    assert "'model.layers.0.mlp.extra_proj.weight'" in str(e.value) and "unmapped" in str(e.value)


def test_safetensors_tensor_of_wrong_shape(qwen2_copy):
    import torch

    rewrite_weights(qwen2_copy, lambda s: s.__setitem__("model.layers.0.self_attn.k_proj.weight", torch.zeros(48, 64)))
    with pytest.raises(CheckpointError) as e:
        edgekit.load(qwen2_copy)
    msg = str(e.value)
    assert "'model.layers.0.self_attn.k_proj.weight'" in msg and "[48, 64]" in msg and "[32, 64]" in msg


def test_corrupt_gguf(tmp_path):
    path = tmp_path / "junk.gguf"
    path.write_bytes(b"not a gguf file at all" * 10)
    with pytest.raises(CheckpointError) as e:
        edgekit.load(path)
    assert "junk.gguf is not a readable GGUF file" in str(e.value) and "accepted: a complete GGUF" in str(e.value)


def test_truncated_gguf(tiny_gguf, tmp_path):
    folder, name = tiny_gguf("qwen2", "f32")
    data = (folder / name).read_bytes()
    for cut in (len(data) - 64, len(data) // 2, 100):
        path = tmp_path / f"cut{cut}.gguf"
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as e:
            edgekit.load(path)
        assert path.name in str(e.value) and "truncated" in str(e.value)


@pytest.mark.parametrize("damage,expect", [
    ({"skip": ("blk.1.ffn_up.weight",)}, ["misses 1 tensor", "blk.1.ffn_up.weight"]),
    ({"extra": {"blk.0.ffn_extra.weight": np.zeros((2, 32))}}, ["'blk.0.ffn_extra.weight'", "unmapped"]),
    ({"skip": ("blk.0.attn_k.weight",), "extra": {"blk.0.attn_k.weight": np.zeros((48, 64))}},
     ["'blk.0.attn_k.weight'", "[48, 64]", "[32, 64]"]),
])
def test_gguf_missing_extra_or_misshapen_tensor(damage, expect, ckpt, tmp_path):
    from gguf_files import write_gguf

    path = write_gguf(ckpt("qwen2"), tmp_path / "bad.gguf", **damage)
    with pytest.raises(CheckpointError) as e:
        edgekit.load(path)
    assert all(x in str(e.value) for x in expect), str(e.value)


def test_unsupported_gguf_quantization_type(tmp_path):
    """IQ4_NL is a real GGML type (an importance-matrix grid) that edgekit does not read: named, with the supported
    ones (every block type llama.cpp's legacy and K-quant presets write)."""
    iq4 = np.zeros((4, 144), dtype=np.uint8)  # eight 32-wide IQ4_NL blocks (18 bytes each) per row
    path = write_raw_gguf(tmp_path / "iq4.gguf", [("token_embd.weight", iq4, Q.IQ4_NL)], arch="llama", block_count=0,
                          embedding_length=256, feed_forward_length=256, vocab_size=4, **{"attention.head_count": 4})
    with pytest.raises(CheckpointError) as e:
        edgekit.load(path)
    msg = str(e.value)
    assert "'token_embd.weight' is stored as IQ4_NL" in msg and "supported: F32, F16, BF16, Q4_0, Q4_1" in msg
    assert "Q2_K, Q3_K, Q4_K, Q5_K, Q6_K" in msg


def test_unknown_gguf_type_number(tiny_gguf, tmp_path):
    """A type id no GGML version defines (patched into the tensor info): named, with the supported ones."""
    from gguf import GGUFReader

    folder, name = tiny_gguf("qwen2", "f32")
    reader = GGUFReader(folder / name)
    field = reader.tensors[0].field
    type_offset = field.offset + sum(p.nbytes for p in field.parts[:4])  # name len, name, n_dims, dims
    data = bytearray((folder / name).read_bytes())
    assert int.from_bytes(data[type_offset:type_offset + 4], "little") == 0  # F32
    data[type_offset:type_offset + 4] = (99).to_bytes(4, "little")
    path = tmp_path / "type99.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as e:
        edgekit.load(path)
    assert "unknown GGML quantization type 99" in str(e.value) and "supported: F32" in str(e.value)


def test_missing_tokenizer_loads_then_fails_where_needed(qwen2_copy, tiny_gguf):
    (qwen2_copy / "tokenizer.json").unlink()
    model = edgekit.load(qwen2_copy)  # the model itself loads and runs
    assert not model.has_tokenizer and model.session(16) is not None
    with pytest.raises(TokenizerError) as e:
        model.generate("hello")
    assert "no tokenizer.json" in str(e.value) and "generation" in str(e.value)
    folder, name = tiny_gguf("qwen2", "notok", with_tokenizer=False)
    gg = edgekit.load(folder / name)
    with pytest.raises(TokenizerError) as e:
        _ = gg.tokenizer
    assert "tokenizer.ggml.tokens" in str(e.value)


def test_every_error_is_an_edgekit_error():
    assert all(issubclass(c, EdgekitError) for c in (CheckpointError, TokenizerError, UnsupportedArchitecture))


# ---- prompts that are not UTF-8 text ---------------------------------------------------------------------------------
def test_a_prompt_with_a_lone_surrogate_is_named(ckpt):
    from edgekit.errors import PromptError

    model = edgekit.load(ckpt("llama"))
    with pytest.raises(PromptError, match=r"the prompt cannot be tokenized: a lone surrogate U\+D800 at byte offset "
                                          r"3 \(character 2\) is not a Unicode character; give UTF-8 text"):
        model.generate("é!\ud800", max_new_tokens=2)
    with pytest.raises(PromptError, match=r"the system message cannot be tokenized: byte 0xff at byte offset 0"):
        model.generate("hi", chat=True, system="\udcff", max_new_tokens=2)


def test_cli_generate_with_bytes_that_are_not_utf8(ckpt):
    """argv bytes 0xff reach Python surrogate-escaped; the CLI names the byte and exits 2, no traceback."""
    import os
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "edgekit", "generate", str(ckpt("llama")), "-p", b"ab\xffcd",
                          "--max-new-tokens", "2"], capture_output=True, timeout=300, check=False,
                         env={**os.environ, "LC_ALL": "C.UTF-8"})
    err = " ".join(res.stderr.decode("utf-8", "replace").split())
    assert res.returncode == 2, err
    assert "PromptError" in err and "byte 0xff at byte offset 2 (character 2) is not valid UTF-8" in err
    assert "Traceback" not in err
