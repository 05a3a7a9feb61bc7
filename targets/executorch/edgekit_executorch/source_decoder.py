"""Quant 'source' applied to a decoder copy: for export, the file's 4-bit grids in edgekit's fused int4 layers
(fused_block.py) and plain Q4Linears; for the reference, GridLinears computing the same fp16 grids with the same
per-group activation rounding (source_q4.py says what is kept and what is not)."""
from __future__ import annotations

import logging

import torch
from torch import nn

from edgekit_executorch.source_q4 import (
    EMBEDDING,
    FUSED,
    OUTPUT,
    GridLinear,
    KernelGrid,
    Q8Grid,
    SourceReport,
    embedding_weight,
    kernel_grid,
    layer_grids,
    output_grid,
    q8_grid,
    requantized_q8,
    require_source,
)

log = logging.getLogger(__name__)
OUTPUT_REQUANT = "int8 per output channel (hqq_scale_only), int8 activations per token (XNNPACK qd8-f32-qc8w)"
EMBEDDING_REQUANT = "int8 per row (hqq_scale_only)"


def quantize_tables(decoder: nn.Module, model, report: SourceReport) -> None:
    """The embedding as stored when ExecuTorch's embedding kernels hold its grid, else int8 per row; an output layer
    the int4 kernel cannot hold (not 4-bit) as int8 per channel. Call before the linears are swapped."""
    from edgekit_executorch.quantize import quantized_weight

    cfg, source = model.config, require_source(model)
    t = source.get(EMBEDDING)
    if t is not None:
        weight = embedding_weight(t)
        if weight is None:
            weight = quantized_weight(model.weights[EMBEDDING], 8, None, False)
            report.requantized[EMBEDDING] = f"{t.source} groups of {t.group_size} -> {EMBEDDING_REQUANT}"
        else:
            report.kept.add(t.source)
        decoder.tok_embeddings.weight = nn.Parameter(weight, requires_grad=False)
    else:
        report.float.append(EMBEDDING)
    head = EMBEDDING if cfg.tie_word_embeddings else OUTPUT
    t = source.get(head)
    if t is None:
        report.float.append(head)
    elif output_grid(cfg, source) is None:
        # a tied head keeps its float Parameter beside the table's swap: quantized on its own
        decoder.output.weight = nn.Parameter(quantized_weight(model.weights[head], 8, None, True),
                                             requires_grad=False)
        report.requantized["output" if cfg.tie_word_embeddings else OUTPUT] = (
            f"{t.source} groups of {t.group_size} -> {OUTPUT_REQUANT}")


def layer_plan(model, i: int, block: nn.Module) -> tuple[dict[str, KernelGrid], bool]:
    """Layer i's grids and whether the layer fuses (all four stacked linears on kernel grids, a layer the fused block
    computes: fused_block.plain_layer)."""
    from edgekit_executorch.kernels.fused_block import plain_layer

    grids = layer_grids(model.config, model.source_quant, i)
    return grids, len(grids) == len(FUSED) and plain_layer(block)


def q8_linears(model, i: int) -> dict[tuple[str, str], tuple[Q8Grid, str | None]]:
    """(owner, linear) -> (its int8 grid, what it was re-quantized from or None) for layer i's linears that are
    quantized in the file but not 4-bit: a Q8_0 as stored, any other re-quantized (source_q4's docstring)."""
    out = {}
    for owner, names in FUSED.values():
        for n in names:
            canon = f"layers.{i}.{owner}.{n}.weight"
            t = model.source_quant.get(canon)
            if t is None or kernel_grid([t]) is not None:
                continue
            grid = q8_grid(t)
            if grid is not None:
                out[(owner, n)] = (grid, None)
                continue
            grid = requantized_q8(model.weights[canon], t.source)
            if grid is not None:
                out[(owner, n)] = (grid, f"{t.source} groups of {t.group_size}")
    return out


def single_grids(model, i: int) -> dict[tuple[str, str], KernelGrid]:
    """(owner, linear) -> its own grid, for a layer that does not fuse."""
    out = {}
    for owner, names in FUSED.values():
        for n in names:
            t = model.source_quant.get(f"layers.{i}.{owner}.{n}.weight")
            grid = None if t is None else kernel_grid([t])
            if grid is not None:
                out[(owner, n)] = grid
    return out


def _note(report: SourceReport, grid: KernelGrid, name: str) -> None:
    report.kept.update(grid.sources)
    if not grid.exact_in_fp16():
        report.scales_rounded_to_fp16.append(name)


def use_source_kernels(decoder: nn.Module, model, report: SourceReport) -> dict[str, int]:
    """Export: fusable layers become FusedQ4Blocks on the file's grids, other 4-bit linears Q4Linears, a 4-bit
    output layer FusedQ4Output; call after the attention modules are in place. Returns counts."""
    from edgekit_executorch.kernels import cache_attention  # noqa: F401  (registers edgekit::qkv_cache_attention)
    from edgekit_executorch.kernels.fused_block import FusedQ4Block, FusedQ4Output, Q4Weights
    from edgekit_executorch.kernels.linear_q4 import Q4Linear

    fp16 = torch.float16
    counts = {"fused_layers": 0, "q4_linears": 0, "fused_output": 0, "shared_table": 0}
    for i, block in enumerate(decoder.layers):
        grids, fuses = layer_plan(model, i, block)
        if fuses:
            weights = {}
            for key, (owner, names) in FUSED.items():
                linears = [getattr(getattr(block, owner), n) for n in names]
                weights[key] = Q4Weights(linears, grid=grids[key].as_pack_args(), scale_dtype=fp16,
                                         act_per_group=True)
                _note(report, grids[key], f"layers.{i}.{key}")
            decoder.layers[i] = FusedQ4Block(block, weights)
            counts["fused_layers"] += 1
            continue
        for (owner, n), grid in single_grids(model, i).items():
            parent = getattr(block, owner)
            codes, scales, group, mins = grid.as_pack_args()
            setattr(parent, n, Q4Linear(codes, scales, group, getattr(parent, n).bias, mins=mins, scale_dtype=fp16,
                                        act_per_group=True))
            _note(report, grid, f"layers.{i}.{owner}.{n}")
            counts["q4_linears"] += 1
        counts["q8_linears"] = counts.get("q8_linears", 0) + use_q8_linears(block, model, i, report)
    grid = output_grid(model.config, model.source_quant)
    if isinstance(grid, Q8Grid):
        counts.update(use_q8_output(decoder, model, grid, report))
    elif grid is not None:
        weights = Q4Weights([decoder.output], grid=grid.as_pack_args(), scale_dtype=fp16, act_per_group=True)
        decoder.output = FusedQ4Output(decoder.norm, decoder.output, weights)
        decoder.norm = nn.Identity()
        _note(report, grid, "output")
        counts["fused_output"] = 1
    _note_floats(decoder, model, report)
    return counts


def use_reference_grids(decoder: nn.Module, model) -> None:
    """Reference: the same linears as GridLinears (a fused layer's parts take their rows of the stacked grid)."""
    for i, block in enumerate(decoder.layers):
        grids, fuses = layer_plan(model, i, block)
        if fuses:
            for key, (owner, names) in FUSED.items():
                w, row = grids[key].weight(), 0
                for n, rows in zip(names, grids[key].rows, strict=True):
                    parent = getattr(block, owner)
                    setattr(parent, n, GridLinear(w[row:row + rows], getattr(parent, n).bias, grids[key].group))
                    row += rows
            continue
        for (owner, n), grid in single_grids(model, i).items():
            parent = getattr(block, owner)
            setattr(parent, n, GridLinear(grid.weight(), getattr(parent, n).bias, grid.group))
        for (owner, n), (grid, _) in q8_linears(model, i).items():
            parent = getattr(block, owner)
            setattr(parent, n, GridLinear(grid.weight(), getattr(parent, n).bias, grid.group))
    grid = output_grid(model.config, model.source_quant)
    if grid is not None:
        # a tied head: the table stays as it is (its lookup is exact either way)
        decoder.output = GridLinear(grid.weight(), None, grid.group)


def use_q8_linears(block: nn.Module, model, i: int, report: SourceReport) -> int:
    """Layer i's 8-bit linears (q8_linears) in edgekit::linear_q8; returns how many."""
    from edgekit_executorch.kernels.linear_q8 import Q8Linear, Q8Table

    made = 0
    for (owner, n), (grid, requantized) in q8_linears(model, i).items():
        parent = getattr(block, owner)
        setattr(parent, n, Q8Linear(Q8Table(grid.codes, grid.scales, grid.group), getattr(parent, n).bias))
        name = f"layers.{i}.{owner}.{n}"
        report.int8_kernel.append(name)
        if requantized:
            report.requantized[f"{name}.weight"] = f"{requantized} -> int8 groups of {grid.group} (fp16 scales)"
        else:
            _note(report, grid, name)
        made += 1
    return made


def use_q8_output(decoder: nn.Module, model, grid: Q8Grid, report: SourceReport) -> dict[str, int]:
    """An 8-bit output layer (with the final norm) in edgekit::linear_q8; a tied table's lookup then reads the same
    constant (edgekit::embedding_q8), so the .pte stores the table once."""
    from edgekit_executorch.kernels.linear_q8 import Q8Embedding, Q8Output, Q8Table

    table = Q8Table(grid.codes, grid.scales, grid.group)
    decoder.output = Q8Output(decoder.norm, table)
    decoder.norm = nn.Identity()
    report.int8_kernel.append("output")
    _note(report, grid, "output")
    shared = 0
    if model.config.tie_word_embeddings:
        decoder.tok_embeddings = Q8Embedding(table)
        report.shared_table = EMBEDDING
        shared = 1
    return {"fused_output": 1, "shared_table": shared}


def _note_floats(decoder: nn.Module, model, report: SourceReport) -> None:
    """Linears left as plain float nn.Linear (not 4-bit in the file, or float there)."""
    for i, block in enumerate(decoder.layers):
        for owner, names in FUSED.values():
            parent = getattr(block, owner, None)
            for n in names:
                if parent is not None and isinstance(getattr(parent, n, None), nn.Linear):
                    report.float.append(f"layers.{i}.{owner}.{n}.weight")
