"""How a target stores a scheme's weights, as data each target plugin declares (Capabilities.storage).

A plan estimates an artifact from the model's shape alone (a config.json or a GGUF header: nothing is exported), so
each target states, per scheme, the bits per weight its format spends on the linears, the token embedding and the
output layer (scales and minimums included), and the KV cache's element size. Under 'source' the weights are the
GGUF's own blocks: the file's bytes per tensor, except the block types a target stores otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StorageLayout:
    scheme: str
    linear_bpw: float                      # bits per weight of the per-layer linears, scales included
    embedding_bpw: float | None = None     # None: as the linears
    output_bpw: float | None = None        # None: as the linears (untied), or the embedding table itself (tied)
    # a tied output layer kept as its own copy beside the embedding (a format whose gather and matmul need the table
    # in two layouts)
    separate_output: bool = False
    float_bytes: float = 4.0               # norms and biases
    kv_bytes: float = 4.0                  # one cached K or V element
    # 'source': bits per weight this target stores a GGUF block type in, where not the file's own (a format without
    # that grid re-quantizes it)
    source_overrides: tuple[tuple[str, float], ...] = ()
    fixed_bytes: int = 0                   # container and program overhead of one artifact
    # the share of the weights the runtime holds a second time once loaded (a runtime that prepacks them into its
    # kernels' layout keeps that copy beside the file's)
    runtime_share: float = 0.0


@dataclass(frozen=True)
class RuntimeFigures:
    """What a target's runtime holds beside the weights and the KV cache once a model is loaded and run, and how
    close its decode comes to the read-bandwidth bound, measured
    per target (benchmarks/bench_plan.py) and declared with its layouts: its libraries and arenas (`fixed_bytes`),
    and its activation buffers, either sized to the largest call the program accepts (ExecuTorch plans one arena
    for the dynamic length's upper bound, max_seq_len - 1 tokens) or to the call actually made."""

    fixed_bytes: int = 0
    planned_for_longest: bool = False
    activation_factor: float = 1.0     # measured buffers over edgekit's per-token estimate (estimate.activation_bytes)
    logits_copies: float = 1.0         # buffers of the logits a call returns (its output and the copy handed over)
    # the share of the read-bandwidth bound (every weight read once per token) its decode reaches, measured: a
    # runtime whose kernels are not bandwidth-bound at this size decodes slower than the bound
    decode_efficiency: float = 1.0


def bpw(bits: int, group: int, scale_bytes: float, min_bytes: float = 0.0) -> float:
    """Bits per weight of `bits`-bit codes with one scale (and minimum) of the given bytes per `group` weights."""
    return bits + 8.0 * (scale_bytes + min_bytes) / group
