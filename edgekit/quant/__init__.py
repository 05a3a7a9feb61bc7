"""edgekit's quantization stage: quantized tensors, schemes and their registry, and the quantizers that make them.

Light on purpose (torch only): targets import it to pack the tensors into their own formats."""
from edgekit.quant.registry import get_scheme, register_scheme, scheme_names
from edgekit.quant.rtn import quantize_tensor
from edgekit.quant.scheme import ACTIVATION_MODES, QuantScheme, WeightGrid
from edgekit.quant.tensor import QuantizedTensor

__all__ = ["ACTIVATION_MODES", "QuantScheme", "QuantizedTensor", "WeightGrid", "get_scheme", "quantize_tensor",
           "register_scheme", "scheme_names"]
