"""genai_config.json (+ tokenizer files) so an export folder runs unchanged in onnxruntime-genai.

Keys follow onnxruntime-genai 0.18's model builder (models/builders/base.py, make_genai_config) for a CPU decoder
with GroupQueryAttention: no position_ids input (rotary is fused), past_present_share_buffer true.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit_onnx.attention import PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE

if TYPE_CHECKING:
    from edgekit.model.edge_model import EdgeModel

GENAI_CONFIG = "genai_config.json"
# onnxruntime-genai's model type where it is not edgekit's family name: its "gemma3" is the vision + text package
# (0.18 refuses a folder holding one decoder: "Loading a model package from a directory path is not supported")
GENAI_TYPES = {"gemma3": "gemma3_text"}


def genai_config(model: EdgeModel, max_seq_len: int, filename: str, custom_ops_library: str | None = None
                 ) -> dict[str, Any]:
    """custom_ops_library: folder-relative path of edgekit's kernel library, which the decoder session registers."""
    cfg = model.config
    session_options: dict[str, Any] = {"log_id": "onnxruntime-genai", "provider_options": []}
    if custom_ops_library:
        session_options["custom_ops_library"] = custom_ops_library
    eos = list(model.stop_ids) or [0]
    bos = model.tokenizer.bos_id if model.has_tokenizer and model.tokenizer.bos_id is not None else cfg.bos_token_id
    return {
        "model": {
            "bos_token_id": bos if bos is not None else eos[0],
            "context_length": max_seq_len,
            "decoder": {
                "session_options": session_options,
                "filename": filename,
                "head_size": cfg.head_dim,
                "hidden_size": cfg.hidden_size,
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "past_key_names": PAST_KEY, "past_value_names": PAST_VALUE},
                "outputs": {"logits": "logits", "present_key_names": PRESENT_KEY,
                            "present_value_names": PRESENT_VALUE},
                "num_attention_heads": cfg.num_heads,
                "num_hidden_layers": cfg.num_layers,
                "num_key_value_heads": cfg.num_kv_heads,
            },
            "eos_token_id": eos if len(eos) > 1 else eos[0],
            "pad_token_id": eos[0],
            "type": GENAI_TYPES.get(cfg.family, cfg.family),
            "vocab_size": cfg.vocab_size,
        },
        "search": {
            "diversity_penalty": 0.0, "do_sample": False, "early_stopping": True, "length_penalty": 1.0,
            "max_length": max_seq_len, "min_length": 0, "no_repeat_ngram_size": 0, "num_beams": 1,
            "num_return_sequences": 1, "past_present_share_buffer": True, "repetition_penalty": 1.0,
            "temperature": 1.0, "top_k": 1, "top_p": 1.0,
        },
    }


def write_genai_files(model: EdgeModel, out: Path, max_seq_len: int, filename: str,
                      custom_ops_library: str | None = None) -> list[str]:
    """genai_config.json, plus tokenizer.json / tokenizer_config.json when the model has a tokenizer."""
    config = genai_config(model, max_seq_len, filename, custom_ops_library)
    (out / GENAI_CONFIG).write_text(json.dumps(config, indent=2))
    files = [GENAI_CONFIG]
    if model.has_tokenizer:
        tok = model.tokenizer
        files += tok.save(out)
        doc = {"tokenizer_class": "GPT2Tokenizer", "add_bos_token": bool(tok.add_bos),
               "bos_token": tok.bos_token, "eos_token": tok.eos_token, "clean_up_tokenization_spaces": False,
               "model_max_length": max_seq_len}
        if tok.chat_template:
            doc["chat_template"] = tok.chat_template
        (out / "tokenizer_config.json").write_text(json.dumps(doc, indent=2))
        files.append("tokenizer_config.json")
    return files
