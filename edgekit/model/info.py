"""Facts about a model for `edgekit info`: shape, tokenizer, and memory at a given context."""
from __future__ import annotations

from typing import Any


def model_info(model_or_path: Any, context: int = 2048) -> dict[str, Any]:
    from edgekit.model.edge_model import EdgeModel
    from edgekit.model.load import load

    model = model_or_path if isinstance(model_or_path, EdgeModel) else load(model_or_path)
    c = model.config
    tok = model._tokenizer
    memory = {}
    for dtype in ("fp32", "fp16", "int8", "int4"):
        w, kv = c.weight_bytes(dtype), c.kv_cache_bytes(context, dtype if dtype != "int4" else "int8")
        memory[dtype] = {"weights": w, "kv_cache": kv, "total": w + kv}
    return {
        "name": model.name, "family": c.family, "architecture": c.architecture, "source_format": model.source_format,
        "source_quant": model.source_quant_type, "parameters": c.num_parameters, "layers": c.num_layers,
        "hidden_size": c.hidden_size, "heads": c.num_heads, "kv_heads": c.num_kv_heads, "head_dim": c.head_dim,
        "vocab_size": c.vocab_size, "max_position_embeddings": c.max_position_embeddings,
        "stored_dtype": c.stored_dtype, "tied_embeddings": c.tie_word_embeddings,
        "tokenizer": f"{tok.vocab_size} tokens" if tok else f"missing ({model._tokenizer_problem})",
        "chat_template": "yes" if tok and tok.chat_template else "no",
        "bos": tok.bos_token if tok else None,
        "stop_tokens": [tok.decode([i]) for i in model.stop_ids] if tok else list(model.stop_ids),
        "context": context, "memory": memory,
    }
