"""Calls the compiled kernels on torch tensors through their C entry points (tests, benchmarks)."""
from __future__ import annotations

import torch

from edgekit_executorch.kernels import load_kernel_library


def attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, k_scale: torch.Tensor | None,
              v_scale: torch.Tensor | None, input_pos: torch.Tensor, *, splits: int = 0, use_pool: bool = True,
              out: torch.Tensor | None = None) -> torch.Tensor:
    """Same contract as torch.ops.edgekit.attention: int8 caches with their scales, or fp32 caches with both scales
    None; contiguous CPU tensors only."""
    lib = load_kernel_library()
    _, t, hq, d = q.shape
    s, hkv = k_cache.shape[1], k_cache.shape[2]
    f32 = k_cache.dtype == torch.float32
    if f32 != (v_cache.dtype == torch.float32) or f32 != (k_scale is None) or (k_scale is None) != (v_scale is None):
        raise ValueError("edgekit attention takes int8 caches with both scales, or fp32 caches with neither")
    args = [x for x in (q, k_cache, v_cache, k_scale, v_scale, input_pos) if x is not None]
    if any(not x.is_contiguous() for x in args):
        raise ValueError("edgekit kernels take contiguous tensors")
    out = torch.empty(q.shape, dtype=torch.float32) if out is None else out
    ptrs = [None if x is None else x.data_ptr() for x in (q, k_cache, v_cache, k_scale, v_scale, input_pos, out)]
    rc = lib.edgekit_attention(*ptrs, t, hq, hkv, d, s, splits, int(use_pool), int(f32))
    if rc != 0:
        raise ValueError(f"edgekit_attention rejected its arguments (code {rc}): input_pos outside [0, {s}) "
                         f"or heads {hq} not a multiple of {hkv}")
    return out


def qkv_cache_attention(qkv: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, input_pos: torch.Tensor,
                        q_heads: int, kv_heads: int) -> torch.Tensor:
    """Same contract as torch.ops.edgekit.qkv_cache_attention (writes the caches in place); contiguous CPU tensors."""
    lib = load_kernel_library()
    t, s, d = qkv.shape[1], k_cache.shape[1], k_cache.shape[3]
    if qkv.dtype != torch.float32 or k_cache.dtype != torch.float32 or v_cache.dtype != torch.float32:
        raise ValueError("edgekit qkv_cache_attention takes fp32 qkv and fp32 caches")
    out = torch.empty(1, t, q_heads * d, dtype=torch.float32)
    rc = lib.edgekit_qkv_cache_attention(_ptr(qkv), _ptr(k_cache), _ptr(v_cache), _ptr(input_pos), _ptr(out), t,
                                         q_heads, kv_heads, d, s)
    if rc != 0:
        raise ValueError(f"edgekit_qkv_cache_attention rejected its arguments (code {rc}): input_pos outside [0, {s}) "
                         f"or heads {q_heads} not a multiple of {kv_heads}")
    return out


def update_int8_cache(value: torch.Tensor, cache: torch.Tensor, scale: torch.Tensor,
                      input_pos: torch.Tensor) -> None:
    lib = load_kernel_library()
    value = value.float().contiguous()
    _, t, hkv, d = value.shape
    rc = lib.edgekit_update_int8_cache(value.data_ptr(), cache.data_ptr(), scale.data_ptr(), input_pos.data_ptr(),
                                       t, hkv, d, cache.shape[1])
    if rc != 0:
        raise ValueError(f"input_pos outside [0, {cache.shape[1]})")


def _ptr(t: torch.Tensor | None) -> int | None:
    if t is None:
        return None
    if not t.is_contiguous():
        raise ValueError("edgekit kernels take contiguous tensors")
    return t.data_ptr()


def linear_q4(x: torch.Tensor, packed: torch.Tensor, scales: torch.Tensor, rowsum: torch.Tensor,
              bias: torch.Tensor | None, group_size: int, out_features: int, *, swiglu: bool = False,
              norm_weight: torch.Tensor | None = None, norm_eps: float = 0.0, residual: torch.Tensor | None = None,
              cos: torch.Tensor | None = None, sin: torch.Tensor | None = None, q_norm_weight=None, k_norm_weight=None,
              heads: tuple[int, int, int] = (0, 0, 0), portable: bool = False, mins: torch.Tensor | None = None,
              act_per_group: bool = False) -> torch.Tensor:
    """The compiled int4 linear on x [M, K] ([M, 2K] with swiglu) with any fused prologue / epilogue; portable=True
    runs its scalar tile loops instead of the SIMD ones. Same meaning as the edgekit::*_q4 ops (linear_q4.py); scales
    (and mins) bf16 or fp16; act_per_group: activations per group (the ONNX Runtime op's mode, q4.py)."""
    if scales.dtype not in (torch.bfloat16, torch.float16) or (mins is not None and mins.dtype != scales.dtype):
        raise ValueError(f"scales {scales.dtype} / mins {None if mins is None else mins.dtype}: the kernel takes "
                         "bf16 or fp16 scales and mins of the same dtype")
    lib = load_kernel_library()
    k = x.shape[-1] // 2 if swiglu else x.shape[-1]
    m = x.numel() // x.shape[-1]
    y = torch.empty(m, out_features, dtype=torch.float32)
    rc = lib.edgekit_linear_q4_fused(
        _ptr(x), _ptr(packed), _ptr(scales.view(torch.int16)), _ptr(rowsum), _ptr(bias), _ptr(y), m, k, out_features,
        group_size, int(swiglu), _ptr(norm_weight), norm_eps, _ptr(residual), _ptr(cos), _ptr(sin),
        _ptr(q_norm_weight), _ptr(k_norm_weight), *heads, int(portable),
        _ptr(None if mins is None else mins.view(torch.int16)), int(scales.dtype == torch.float16), int(act_per_group))
    if rc != 0:
        raise ValueError(f"edgekit_linear_q4_fused rejected its arguments (code {rc})")
    return y


def linear_q4_isa() -> str:
    return load_kernel_library().edgekit_linear_q4_isa().decode()


def isa() -> str:
    return load_kernel_library().edgekit_kernels_isa().decode()
