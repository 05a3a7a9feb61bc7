"""The eager reference of a quantized export with its weights dequantized once, not on every call.

torchao's IntxUnpackedToInt8Tensor dequantizes its whole weight inside every F.linear / F.embedding (and, after
unwrap_tensor_subclass, rebuilds the tensor subclass on every access first), so each eager forward of the reference
re-made every fp32 weight: validating a SmolLM2-135M 8da4w export took 449 s here (its lowering 516 s), most of it in
`_dequantize_affine`. These modules hold the dequantized weight and run the same ops in the same order (torchao's own
int8 asymmetric per-token fake quantization of the input when the weight asks for it, then F.linear / F.embedding),
so the reference's outputs are bit-identical (tests/executorch/test_quantize.py)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DequantizedLinear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight
        self.register_buffer("weight", w.dequantize().detach())
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach())
        self.quantize_input = w.activation_quantization is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantize_input:
            from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import (
                _apply_int8_act_asym_per_token_quant_dequant,
            )

            x = _apply_int8_act_asym_per_token_quant_dequant(x)
        return F.linear(x, self.weight, self.bias)


def _is_intx(weight) -> bool:
    from torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor import (
        IntxUnpackedToInt8Tensor,
        IntxUnpackedToInt8TensorActivationQuantization,
    )

    return isinstance(weight, IntxUnpackedToInt8Tensor) and weight.activation_quantization in (
        None, IntxUnpackedToInt8TensorActivationQuantization.INT8_ASYM_PER_TOKEN)


def dequantize_once(decoder: nn.Module) -> int:
    """Swaps every torchao-quantized linear and embedding of `decoder` for its dequantized-once twin; returns how many."""
    swaps = []
    for parent in decoder.modules():
        for name, child in parent.named_children():
            if isinstance(child, (nn.Linear, nn.Embedding)) and _is_intx(child.weight):
                swaps.append((parent, name, child))
    for parent, name, child in swaps:
        if isinstance(child, nn.Linear):
            setattr(parent, name, DequantizedLinear(child))
        else:
            setattr(parent, name, nn.Embedding.from_pretrained(child.weight.dequantize().detach(), freeze=True))
    return len(swaps)
