"""Facts about a model for `edgekit info`: shape, tokenizer, and memory at a given context."""
from __future__ import annotations

from typing import Any


def model_info(model_or_path: Any, context: int = 2048) -> dict[str, Any]:
    from edgekit.model.edge_model import EdgeModel

    model, tensor_data = (model_or_path, "complete") if isinstance(model_or_path, EdgeModel) else _load(model_or_path)
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
        "tensor_data": tensor_data, "context": context, "memory": memory, "attention": attention_layout(c),
        "kv_cache_full_context": c.kv_cache_bytes(context, "fp32") / max(1, _full_cache_bytes(c, context)),
    }


def attention_layout(c: Any) -> str:
    """"18 full" or "15 sliding (window 512, ring of 544 rows) + 3 full": what each layer's KV cache holds."""
    sliding = sum(c.is_sliding(i) for i in range(c.num_layers))
    if not sliding:
        return f"{c.num_layers} full"
    from edgekit.model.config import RING_REWIND

    return (f"{sliding} sliding (window {c.sliding_window}, ring of {c.sliding_window + RING_REWIND} rows) + "
            f"{c.num_layers - sliding} full")


def _full_cache_bytes(c: Any, context: int) -> int:
    """The fp32 cache every layer would hold without sliding windows."""
    return 2 * c.num_layers * context * c.kv_dim * 4


def _load(path_or_name: Any) -> tuple[Any, str]:
    """The model, and "complete" or the truncation as "truncated: N of M bytes present". A GGUF whose tensor data is
    cut off (a partial download, a header-only file) is described from its metadata alone: everything here but the
    weights comes from there."""
    from edgekit.model.load import is_gguf_file, load, resolve

    path = resolve(path_or_name)
    if path.is_file() and is_gguf_file(path):
        from edgekit.model.gguf_reader import load_gguf_header, open_gguf

        reader = open_gguf(path)
        if reader.truncated:
            model, _ = load_gguf_header(path)
            return model, (f"truncated: {reader.size:,} of {reader.data_end:,} bytes present "
                           f"({reader.size / reader.data_end:.1%}); metadata only, the weights cannot be loaded")
    return load(path), "complete"
