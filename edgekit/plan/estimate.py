"""What an export of a model would weigh and hold at run time, from its shape: `edgekit plan`."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from edgekit.plan.layout import RuntimeFigures, StorageLayout

# The activations of one forward: hidden-sized buffers (residual, norm, q/k/v, attention out, MLP in/out) and the
# MLP's intermediate ones per token of the largest chunk fed at once, and the logits of the rows returned.
PREFILL_CHUNK = 128


@dataclass(frozen=True)
class PlanRow:
    target: str
    scheme: str
    artifact_bytes: int
    weights_bytes: int
    kv_cache_bytes: int
    kv_dtype: str
    activation_bytes: int
    runtime_bytes: int
    total_bytes: int
    read_per_token_bytes: int
    fits: bool | None = None
    # the read-bandwidth bound times the share of it the target's decode was measured to reach
    decode_tokens_per_s: float | None = None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _shape_params(c: Any) -> dict[str, int]:
    h, i, q, kv = c.hidden_size, c.intermediate_size, c.q_dim, c.kv_dim
    linears = c.num_layers * (h * q + 2 * h * kv + q * h + 3 * h * i)
    bias = c.num_layers * (q + 2 * kv) if c.attention_bias else 0
    norms = c.num_layers * (2 + 2 * bool(c.sandwich_norms)) * h + h
    norms += 2 * c.num_layers * c.head_dim if c.qk_norm else 0
    return {"linears": linears, "embedding": c.vocab_size * h, "small": bias + norms}


def weight_bytes(c: Any, layout: StorageLayout, source_tensors: list[tuple[str, str, int, int]] | None = None
                 ) -> tuple[int, int]:
    """(artifact weight bytes, bytes one decode step reads). `source_tensors` (for 'source'): the GGUF's tensors as
    (name, block type, elements, bytes in the file)."""
    p = _shape_params(c)
    if layout.scheme == "source" and source_tensors:
        over = dict(layout.source_overrides)
        total = read = 0.0
        for name, qtype, n, nbytes in source_tensors:
            b = n * over[qtype] / 8 if qtype in over else nbytes
            total += b
            if name == "token_embd.weight":   # a step gathers one row; a tied table is also the output layer
                read += b if c.tie_word_embeddings else b / c.vocab_size
            else:
                read += b
        return int(total), int(read)
    emb_bpw = layout.embedding_bpw if layout.embedding_bpw is not None else layout.linear_bpw
    out_bpw = layout.output_bpw if layout.output_bpw is not None else (emb_bpw if c.tie_word_embeddings
                                                                         else layout.linear_bpw)
    linears = p["linears"] * layout.linear_bpw / 8
    embedding = p["embedding"] * emb_bpw / 8
    output = p["embedding"] * out_bpw / 8
    small = p["small"] * layout.float_bytes
    stored_output = output if (not c.tie_word_embeddings or layout.separate_output) else 0.0
    total = linears + embedding + stored_output + small
    read = linears + output + small + embedding / c.vocab_size
    return int(total), int(read)


def kv_bytes(c: Any, context: int, layout: StorageLayout) -> int:
    return int(c.kv_cache_bytes(context, "fp32") * layout.kv_bytes / 4.0)


def activation_bytes(c: Any, rows: int, logits_rows: int, memory: RuntimeFigures) -> int:
    """Activation buffers of a call of `rows` tokens returning `logits_rows` rows of logits: hidden-sized buffers
    (residual, norms, q/k/v, attention out) and the MLP's per token, scaled by what the runtime was measured to
    hold, plus the logits."""
    per_token = 8 * c.hidden_size + 3 * c.intermediate_size + 2 * c.q_dim
    return int(4 * (rows * per_token * memory.activation_factor
                    + memory.logits_copies * logits_rows * c.vocab_size))


def plan_row(target: str, c: Any, layout: StorageLayout, context: int, memory: RuntimeFigures | None = None,
             source_tensors: list[tuple[str, str, int, int]] | None = None, free_bytes: int | None = None,
             bandwidth_gbs: float | None = None, all_logits: bool = False, note: str = "") -> PlanRow:
    """One target and scheme, exported with a cache of `context` positions (max_seq_len), the runtime holding
    `layout.runtime_share` of the weights a second time (prepacked) and `memory`'s buffers."""
    memory = memory or RuntimeFigures()
    weights, read = weight_bytes(c, layout, source_tensors)
    kv = kv_bytes(c, context, layout)
    rows = max(context - 1, 1) if memory.planned_for_longest else min(PREFILL_CHUNK, context)
    acts = activation_bytes(c, rows, rows if all_logits else 1, memory)
    runtime_bytes = int(memory.fixed_bytes + layout.runtime_share * weights)
    total = weights + kv + acts + runtime_bytes
    read_step = read + kv   # a step at a full context reads every cached position once
    rate = memory.decode_efficiency * bandwidth_gbs * 1e9 / read_step if bandwidth_gbs else None
    return PlanRow(target, layout.scheme, weights + layout.fixed_bytes, weights, kv,
                   {4.0: "fp32", 2.0: "fp16", 1.0: "int8"}.get(layout.kv_bytes, f"{layout.kv_bytes:g} B"), acts,
                   runtime_bytes, total, read_step, None if free_bytes is None else total <= free_bytes, rate, note)
