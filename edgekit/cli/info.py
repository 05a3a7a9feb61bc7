from __future__ import annotations

import click
from rich.table import Table

from edgekit.cli.common import MODEL_ARG, console, human_bytes


@click.command("info")
@MODEL_ARG
@click.option("--context", type=int, default=2048, show_default=True, help="Context length for the KV-cache estimate.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(model: str, context: int, as_json: bool) -> None:
    """Show a model's family, shape, tokenizer and memory needs."""
    from edgekit.model.info import model_info

    info = model_info(model, context)
    if as_json:
        import json

        click.echo(json.dumps(info, indent=2))
        return
    t = Table(title=f"{info['name']}", show_header=False)
    for key in ("family", "architecture", "source_format", "source_quant", "parameters", "layers", "hidden_size",
                "heads", "kv_heads", "head_dim", "vocab_size", "max_position_embeddings", "stored_dtype",
                "tied_embeddings", "attention", "tokenizer", "chat_template", "bos", "stop_tokens", "tensor_data"):
        t.add_row(key, str(info[key]))
    if info["kv_cache_full_context"] < 1:
        t.add_row("kv cache", f"{info['kv_cache_full_context']:.0%} of a full cache's at {context} tokens")
    console.print(t)
    if info["tensor_data"] != "complete":
        console.print(f"[yellow]tensor data {info['tensor_data']}[/]", markup=True, highlight=False)
    m = Table(title=f"memory (KV cache at {context} tokens)")
    for col in ("dtype", "weights", "kv cache", "total"):
        m.add_column(col, justify="right")
    for dtype, row in info["memory"].items():
        m.add_row(dtype, human_bytes(row["weights"]), human_bytes(row["kv_cache"]), human_bytes(row["total"]))
    console.print(m)
