"""Writing GGUF files for tests: an HF checkpoint converted the way llama.cpp's convert_hf_to_gguf.py does it.

Llama q/k rows get llama.cpp's permute (so the reader must undo it), Llama 3 rope scaling becomes a rope_freqs
tensor, the byte-level BPE tokenizer becomes tokenizer.ggml.* metadata. Tensor types are chosen per tensor.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, TokenType
from gguf.quants import quantize

HF_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias", "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


# Gemma 3's norms around attention and the MLP (its post_attention_layernorm follows attention, as llama.cpp names it)
GEMMA3_HF_TO_GGUF = {
    **HF_TO_GGUF, "post_attention_layernorm.weight": "post_attention_norm.weight",
    "pre_feedforward_layernorm.weight": "ffn_norm.weight", "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
}


def gguf_name(hf: str, arch: str = "llama") -> str:
    table = GEMMA3_HF_TO_GGUF if arch == "gemma3" else HF_TO_GGUF
    if hf in table:
        return table[hf]
    _, _, i, rest = hf.split(".", 3)
    return f"blk.{i}.{table[rest]}"


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's LlamaModel.permute (HF half-split rows -> interleaved pairs)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def encode_tensor(w: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
    w = np.ascontiguousarray(w, dtype=np.float32)
    if qtype == GGMLQuantizationType.F32:
        return w
    if qtype == GGMLQuantizationType.F16:
        return w.astype(np.float16)
    return quantize(w, qtype)


def llama3_rope_factors(cfg: dict) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors for rope_type llama3."""
    rs = cfg["rope_scaling"] if cfg.get("rope_scaling") else cfg["rope_parameters"]
    theta = rs.get("rope_theta", cfg.get("rope_theta", 10000.0))
    dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    freqs = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor, low, high = rs["factor"], rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0)
    old = rs.get("original_max_position_embeddings", 8192)
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def tokenizer_metadata(folder: Path, pre: str = "gpt2", user_defined: tuple[str, ...] = ()) -> dict:
    """tokens, merges, token types and special ids from an HF byte-level BPE tokenizer.json."""
    tj = json.loads((folder / "tokenizer.json").read_text())
    tc = json.loads((folder / "tokenizer_config.json").read_text()) if (folder / "tokenizer_config.json").exists() else {}
    vocab = dict(tj["model"]["vocab"])
    for added in tj["added_tokens"]:
        vocab[added["content"]] = added["id"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    assert len(tokens) == max(vocab.values()) + 1
    special = {a["content"] for a in tj["added_tokens"] if a["special"]}
    types = [TokenType.USER_DEFINED if t in user_defined else TokenType.CONTROL if t in special else TokenType.NORMAL
             for t in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]

    def tok(v):
        return v.get("content") if isinstance(v, dict) else v

    template = tc.get("chat_template")
    if (folder / "chat_template.jinja").exists():
        template = (folder / "chat_template.jinja").read_text()
    return {"tokens": tokens, "merges": merges, "types": types, "pre": pre, "template": template,
            "eos": vocab.get(tok(tc.get("eos_token"))), "bos": vocab.get(tok(tc.get("bos_token"))),
            "pad": vocab.get(tok(tc.get("pad_token")))}


def write_gguf(folder: Path, out: Path, types: dict[str, GGMLQuantizationType] | None = None,
               default: GGMLQuantizationType = GGMLQuantizationType.F32, pre: str = "gpt2",
               user_defined: tuple[str, ...] = (), add_bos: bool | None = None, with_tokenizer: bool = True,
               skip: tuple[str, ...] = (), extra: dict[str, np.ndarray] | None = None,
               encode: Callable[[np.ndarray, GGMLQuantizationType], np.ndarray] | None = None) -> Path:
    """Convert the HF checkpoint in `folder` to a GGUF at `out`; `types` picks the type per GGUF tensor suffix
    (e.g. {"ffn_down.weight": Q4_1}); 1-D tensors always stay F32 as llama.cpp keeps them. `skip` leaves GGUF
    tensors out, `extra` adds F32 tensors (to damage a file on purpose); `encode(x, qtype)` replaces encode_tensor
    (gguf.quants cannot write K-quants)."""
    from safetensors.numpy import load_file

    cfg = json.loads((folder / "config.json").read_text())
    arch = {"gemma3_text": "gemma3"}.get(cfg["model_type"], cfg["model_type"])
    heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // heads
    w = GGUFWriter(out, arch)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    rope_params = cfg.get("rope_parameters") or {}
    rope_params = rope_params.get("full_attention", rope_params)
    w.add_rope_freq_base(float(cfg.get("rope_theta") or rope_params.get("rope_theta", 1e4)))
    if arch == "gemma3":  # llama.cpp's Gemma 3 keys: the window; the pattern (every 6th global) is llama.cpp's rule
        assert cfg["layer_types"] == [("full_attention" if (i + 1) % 6 == 0 else "sliding_attention")
                                      for i in range(cfg["num_hidden_layers"])], "llama.cpp reads no other pattern"
        w.add_sliding_window(cfg["sliding_window"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(cfg["vocab_size"])
    if arch == "llama":
        w.add_rope_dimension_count(head_dim)
    else:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    state = {}
    for f in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(f)))
    rope = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    if rope.get("rope_type") == "llama3":
        w.add_tensor("rope_freqs.weight", llama3_rope_factors(cfg))
    for hf_name, tensor in state.items():
        if hf_name == "lm_head.weight" and cfg.get("tie_word_embeddings"):
            continue
        name = gguf_name(hf_name, arch)
        if name in skip:
            continue
        x = tensor.astype(np.float32)
        if arch == "gemma3" and name.endswith("norm.weight"):
            x = x + 1.0  # convert_hf_to_gguf.py's Gemma norm_shift: the file stores the multiplier 1 + w
        if arch == "llama" and name.endswith("attn_q.weight"):
            x = permute(x, heads)
        elif arch == "llama" and name.endswith("attn_k.weight"):
            x = permute(x, kv)
        qtype = GGMLQuantizationType.F32 if x.ndim == 1 else next(
            (t for suffix, t in (types or {}).items() if name.endswith(suffix)), default)
        w.add_tensor(name, (encode or encode_tensor)(x, qtype), raw_dtype=qtype)
    for name, x in (extra or {}).items():
        w.add_tensor(name, x.astype(np.float32))
    if with_tokenizer:
        _add_tokenizer(w, tokenizer_metadata(folder, pre, user_defined), add_bos)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def _add_tokenizer(w: GGUFWriter, meta: dict, add_bos: bool | None) -> None:
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(meta["pre"])
    w.add_token_list(meta["tokens"])
    w.add_token_types(meta["types"])
    w.add_token_merges(meta["merges"])
    if meta["eos"] is not None:
        w.add_eos_token_id(meta["eos"])
    if meta["bos"] is not None:
        w.add_bos_token_id(meta["bos"])
    if meta["pad"] is not None:
        w.add_pad_token_id(meta["pad"])
    if add_bos is not None:
        w.add_add_bos_token(add_bos)
    if meta["template"]:
        w.add_chat_template(meta["template"])


def write_raw_gguf(out: Path, tensors: list[tuple[str, np.ndarray, GGMLQuantizationType]], arch: str = "llama",
                   **kv: int) -> Path:
    """A minimal GGUF with the given raw tensors and integer metadata (for error tests)."""
    w = GGUFWriter(out, arch)
    for key, value in kv.items():
        w.add_uint32(f"{arch}.{key}", value)
    for name, data, qtype in tensors:
        w.add_tensor(name, data, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
