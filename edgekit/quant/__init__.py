"""edgekit's quantization stage: quantized tensors, schemes, and the quantizers that make them."""
from edgekit.quant.tensor import QuantizedTensor

__all__ = ["QuantizedTensor"]
