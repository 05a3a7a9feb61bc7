"""edgekit's quantized kernels, runtime-free: the op definitions (torch.library) with their PyTorch references, the
int4 packing (q4.py), and the C++ cores every runtime binding includes (csrc/: the int4 linear and its tiles).

`use_int8_kv_cache(decoder)` installs the int8 KV cache. The bindings that register the compiled cores with a
runtime live in its plugin (`edgekit_executorch.kernels`, `edgekit_onnx.kernels`); `build.py` compiles and caches them.
"""
from __future__ import annotations

from edgekit.kernels.int8_cache import Int8CachedAttention, cache_rotation, use_int8_kv_cache
from edgekit.kernels.ops import dequantize_cache, quantize_rows, reference_attention, reference_update_int8_cache

__all__ = [
    "Int8CachedAttention",
    "cache_rotation",
    "dequantize_cache",
    "quantize_rows",
    "reference_attention",
    "reference_update_int8_cache",
    "use_int8_kv_cache",
]
