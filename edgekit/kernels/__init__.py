"""Quantized attention: op definitions (torch.library) and the PyTorch reference; no compiled code here.

`use_int8_kv_cache(decoder)` installs the int8 KV cache. The compiled kernels live in the ExecuTorch plugin
(`edgekit_executorch.kernels`), the only runtime that loads them.
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
