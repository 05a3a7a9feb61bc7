"""Quantization schemes of the ExecuTorch target, applied with torchao's `quantize_` the way ExecuTorch's own LLM
export (executorch/extension/llm/export/quantize.py) and optimum-executorch do it.

- fp32:  no quantization.
- w8:    int8 per-output-channel weights in every linear. XNNPACK has no fp32-activation x int8-weight GEMM that
         ExecuTorch's partitioner delegates (a weight-only dequant + linear would stay in portable kernels), so the
         activations are quantized dynamically per token to int8 inside the op (qd8-f32-qc8w).
- 8da4w: int8 dynamic (per token) activations x int4 weights, groups of `group_size` (32, 64 or 128) input channels.
Options: `embedding_bits` (8: per row, 4: groups of 32) quantizes the token embedding (weight-only;
ExecuTorch's quantized embedding kernels), `output_bits` (8: per channel, 4: groups of `group_size`) the output layer
(it follows the scheme by default; fp32 keeps it float unless asked).
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from edgekit.errors import UnsupportedOption

log = logging.getLogger(__name__)

SCHEMES = ("fp32", "w8", "8da4w")
GROUP_SIZES = (32, 64, 128)
BITS = (4, 8)
OPTIONS = ("group_size", "embedding_bits", "output_bits")
QPARAMS_ALGORITHM = "hqq_scale_only"  # what ExecuTorch's and optimum-executorch's LLM exports use


@dataclass(frozen=True)
class QuantPlan:
    scheme: str
    group_size: int | None          # linears' weight group (None: per channel)
    embedding_bits: int | None      # None: float
    output_bits: int | None         # None: float
    output_group_size: int | None

    def describe(self) -> dict[str, Any]:
        return asdict(self) | {"qparams_algorithm": QPARAMS_ALGORITHM}


def plan(scheme: str, options: dict[str, Any]) -> QuantPlan:
    """Checks the scheme's options; every bad value names the accepted ones."""
    if scheme not in SCHEMES:
        raise UnsupportedOption(f"quant scheme {scheme!r} is not supported by the executorch target; "
                                f"supported: {', '.join(SCHEMES)}")
    group = options.get("group_size")
    if group is not None and scheme != "8da4w":
        raise UnsupportedOption(f"group_size applies to 8da4w only (scheme {scheme!r} is per channel)")
    if scheme == "8da4w":
        group = 32 if group is None else int(group)
        if group not in GROUP_SIZES:
            raise UnsupportedOption(f"group_size {group} is not supported; supported: {GROUP_SIZES}")
    emb, out = options.get("embedding_bits"), options.get("output_bits")
    for name, bits in (("embedding_bits", emb), ("output_bits", out)):
        if bits is not None and int(bits) not in BITS:
            raise UnsupportedOption(f"{name} {bits!r} is not supported; supported: 8, 4 (or leave it unset)")
    emb = None if emb is None else int(emb)
    if out is None:
        out = {"fp32": None, "w8": 8, "8da4w": 4}[scheme]
    out = int(out) if out is not None else None
    out_group = None if out in (None, 8) else (group or 32)
    return QuantPlan(scheme, group, emb, out, out_group)


def _linear_config(bits: int, group: int | None):
    import torch
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_api import Int8DynamicActivationIntxWeightConfig

    return Int8DynamicActivationIntxWeightConfig(
        weight_dtype=torch.int4 if bits == 4 else torch.int8,
        weight_granularity=PerAxis(0) if group is None else PerGroup(group),
        intx_choose_qparams_algorithm=QPARAMS_ALGORITHM)


def _embedding_config(bits: int):
    import torch
    from torchao.quantization.granularity import PerAxis, PerGroup
    from torchao.quantization.quant_api import IntxWeightOnlyConfig

    return IntxWeightOnlyConfig(weight_dtype=torch.int4 if bits == 4 else torch.int8,
                                granularity=PerAxis(0) if bits == 8 else PerGroup(32),
                                intx_choose_qparams_algorithm=QPARAMS_ALGORITHM)


def apply(decoder: nn.Module, qp: QuantPlan) -> nn.Module:
    """Quantizes `decoder` in place (its own copy: quantize_ replaces parameters, it never writes the shared tensors)."""
    if qp.scheme == "fp32" and qp.embedding_bits is None and qp.output_bits is None:
        return decoder
    from torchao.quantization.quant_api import quantize_
    from torchao.utils import unwrap_tensor_subclass

    def is_output(m: nn.Module, fqn: str) -> bool:
        return isinstance(m, nn.Linear) and fqn == "output"

    if qp.embedding_bits is not None:
        _check_groups(decoder.tok_embeddings.weight.shape[1], None if qp.embedding_bits == 8 else 32, "tok_embeddings")
        quantize_(decoder, _embedding_config(qp.embedding_bits), filter_fn=lambda m, fqn: isinstance(m, nn.Embedding))
    if qp.scheme != "fp32":
        bits = 4 if qp.scheme == "8da4w" else 8
        for fqn, m in decoder.named_modules():
            if isinstance(m, nn.Linear) and fqn != "output":
                _check_groups(m.in_features, qp.group_size, fqn)
        quantize_(decoder, _linear_config(bits, qp.group_size),
                  filter_fn=lambda m, fqn: isinstance(m, nn.Linear) and not is_output(m, fqn))
    if qp.output_bits is not None:
        _check_groups(decoder.output.in_features, qp.output_group_size, "output")
        quantize_(decoder, _linear_config(qp.output_bits, qp.output_group_size), filter_fn=is_output)
    return unwrap_tensor_subclass(decoder)


def _check_groups(in_features: int, group: int | None, fqn: str) -> None:
    if group is not None and in_features % group:
        raise UnsupportedOption(f"{fqn} has {in_features} input features, not a multiple of group_size {group}; "
                                f"choose a group size among {GROUP_SIZES} that divides it")
