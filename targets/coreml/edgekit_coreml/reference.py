"""The eager graph a Core ML artifact must match: the fp32 decoder with the artifact's (de)quantized weights (under
quant 'source' the checkpoint's own grids, as source_grid.SourceGrid.weight computes them)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from edgekit_coreml.quant import fake_quantize, quant_for, weight_names

if TYPE_CHECKING:
    from edgekit.model.edge_model import EdgeModel
    from edgekit.model.graph import Decoder
    from edgekit.targets.base import TargetSpec


def reference_decoder(model: EdgeModel, spec: TargetSpec) -> Decoder:
    from edgekit.model.graph import build_decoder

    q = quant_for(spec.quant, spec.options)
    weights = dict(model.weights)
    if q.scheme == "source":   # the checkpoint's grids as the program computes them (fp16 products + corrections)
        from edgekit_coreml.source_grid import source_grids

        weights.update({name: grid.weight() for name, grid in source_grids(model).items()})
    elif q.bits is not None:
        for name in weight_names(list(weights)):
            weights[name] = fake_quantize(weights[name], q)
    return build_decoder(model.config, weights, spec.max_seq_len, torch.float32, spec.last_logits_only)
