"""int4 linears quantized by edgekit (quantizer 'search' or 'gptq') instead of ONNX Runtime's round-to-nearest.

The QuantizedTensors go into the graph exactly as quant 'source' carries a GGUF's (source_grid.to_grid ->
MatMulNBits, or LinearQ4 with linear_kernel 'edgekit'), and the reference graph carries their dequantization, so
validation compares like with like. The output layer and the embedding table stay on ORT's grid (the output_bits /
embedding_bits options), as with quantizer 'rtn', unless quantizer_output: then the output layer is the quantizer's
too (and a tied embedding gathers from its codes).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch

from edgekit.quant.tensor import QuantizedTensor

if TYPE_CHECKING:
    from edgekit.model.edge_model import EdgeModel
    from edgekit_onnx.quant import QuantPlan

log = logging.getLogger(__name__)
# the last result, keyed by what determines it: export and reference() of one export share one GPTQ run
_LAST: list[tuple[tuple, dict[str, QuantizedTensor], dict[str, Any]]] = []


def quantizer_tensors(model: EdgeModel, plan: QuantPlan) -> tuple[dict[str, QuantizedTensor], dict[str, Any]]:
    """({canonical name: QuantizedTensor} of every layer linear, metadata), or ({}, {}) for quantizer 'rtn'."""
    if plan.scheme != "int4" or plan.quantizer == "rtn":
        return {}, {}
    from edgekit.quant.calibrate import calibration_for
    from edgekit.quant.scheme import WeightGrid

    grid = WeightGrid(plan.linear_bits, plan.block_size, symmetric=True, search=plan.quantizer == "search")
    cal = calibration_for(plan.calibration) if plan.quantizer == "gptq" else None
    key = (id(model), id(model.weights), grid, plan.quantizer, None if cal is None else cal.sha256,
           plan.quantizer_output)
    if _LAST and _LAST[0][0] == key:
        return _LAST[0][1], _LAST[0][2]
    if cal is not None:
        from edgekit.quant.calibrate import gptq_weights

        tensors = gptq_weights(model, grid, cal, include_output=plan.quantizer_output)
        meta = {"quantizer": "gptq", "calibration": {"id": cal.id, "sha256": cal.sha256,
                                                     "tokens": len(model.tokenizer.encode(cal.text))}}
    else:
        tensors = _searched(model, grid, plan.quantizer_output)
        meta = {"quantizer": "search"}
    _LAST[:] = [(key, tensors, meta)]
    return tensors, meta


def _searched(model: EdgeModel, grid, head: bool) -> dict[str, QuantizedTensor]:
    """Per-group scale search (edgekit.quant.rtn), each row zero-padded to whole groups as MatMulNBits packs it."""
    from edgekit.quant.gptq import padded_width
    from edgekit.quant.rtn import quantize_tensor
    from edgekit_onnx.source_grid import fused_parts

    out = {}
    for name, parts in fused_parts(model.config).items():
        if not (name.startswith("/model/layers.") or (head and name == "/lm_head")):
            continue
        for p in parts:
            w = model.weights[p].detach().float()
            k = w.shape[1]
            w = torch.nn.functional.pad(w, (0, padded_width(k, grid.group_size) - k))
            out[p] = quantize_tensor(w, grid.bits, grid.group_size, grid.symmetric, search=True)
    return out


def quantizer_grids(model: EdgeModel, plan: QuantPlan) -> tuple[dict, dict[str, Any]]:
    """The layer linears' MatMulNBits grids (builder names) and the metadata entry, or ({}, {})."""
    tensors, meta = quantizer_tensors(model, plan)
    if not tensors:
        return {}, {}
    from edgekit_onnx.source_grid import fused_parts, to_grid

    grids = {}
    for name, parts in fused_parts(model.config).items():
        if all(p in tensors for p in parts):
            grids[name] = to_grid([tensors[p] for p in parts], parts, model.weights[parts[0]].shape[1])
    return grids, meta
