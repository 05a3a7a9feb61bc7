"""Attention modules swapped into the decoder copy that gets exported: ExecuTorch's own LLM ops, or edgekit's kernel.

`llama::update_cache(value [B,T,H,D], cache [B,S,H,D], start_pos)` writes the new K/V rows in place at
`start_pos`; `llama::custom_sdpa(q [B,T,Hq,D], k_cache, v_cache [B,S,Hkv,D], start_pos, mask, dropout, is_causal)`
attends causally over rows [0, start_pos + T) with grouped-query heads, without materialising a mask or repeating
K/V (this is what optimum-executorch's --use_custom_sdpa / --use_custom_kv_cache export). Both read positions
from `input_pos[0]`: the positions of one call must be contiguous, which is what every runner sends.

With attention_kernel 'edgekit' the rows are written the same way and `edgekit::attention` (edgekit's kernel
library, fp32 caches, no scales) attends instead of custom_sdpa. On the host custom_sdpa's decode step is a BLAS
sgemm that resolves to the MKL inside libtorch and runs OpenMP threads beside ExecuTorch's pool (measured with perf
on the 0.5B decode: MKL sgemv 4 % of the cycles plus OpenMP spinning); edgekit's kernel is a flash-decoding loop on
ExecuTorch's own pool (decode, 14/2 heads, D 64: 21 vs 37 us at context 64, 80 vs 242 us at 500).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from edgekit.errors import UnsupportedOption

ATTENTION_KERNELS = ("llama", "edgekit")


def resolve_attention(options: Mapping, kv_cache: str, linear_kernel: str) -> str:
    """Which attention the export uses: 'int8' (edgekit's int8-cache kernel), 'edgekit' (edgekit's kernel on fp32
    caches), 'llama' (ExecuTorch's custom_sdpa) or 'graph' (plain ops, custom_sdpa false). attention_kernel defaults
    to 'edgekit' when the int4 linears already need edgekit's kernel library (linear_kernel 'edgekit'), else 'llama'.
    """
    kernel = options.get("attention_kernel")
    if kernel is not None and kernel not in ATTENTION_KERNELS:
        raise UnsupportedOption(f"attention_kernel {kernel!r} is not supported; supported: {', '.join(ATTENTION_KERNELS)}")
    if kv_cache == "int8":
        if kernel == "llama":
            raise UnsupportedOption("attention_kernel 'llama' (custom_sdpa) reads fp32 caches only; kv_cache 'int8' is "
                                    "run by edgekit's kernel: leave attention_kernel unset or use kv_cache fp32")
        return "int8"
    if not _true(options.get("custom_sdpa", True)):
        if kernel is not None:
            raise UnsupportedOption(f"custom_sdpa false (plain graph attention) contradicts attention_kernel {kernel!r}; "
                                    "set one of them")
        return "graph"
    return kernel or ("edgekit" if linear_kernel == "edgekit" else "llama")


def _true(value) -> bool:
    return value if isinstance(value, bool) else str(value).lower() not in ("false", "0", "no")


def load_llm_ops() -> None:
    """Registers llama::update_cache / custom_sdpa (AOT kernels and meta functions) with torch."""
    import executorch.extension.llm.custom_ops.custom_ops  # noqa: F401


class StartPosition:
    """The call's first position as a checked SymInt, read from `input_pos` once per forward (by layer 0) and shared by
    every layer: each `.item()` is a select + _local_scalar_dense + four bound checks in portable kernels per layer."""

    value: torch.SymInt | int | None = None

    def read(self, input_pos: torch.Tensor, t: int, max_seq_len: int):
        start_pos = input_pos[0].item()
        torch._check(start_pos >= 0)
        torch._check(start_pos < max_seq_len)
        torch._check(start_pos + t <= max_seq_len)
        self.value = start_pos
        return start_pos


class CustomSdpaAttention(nn.Module):
    """Drop-in for edgekit's CachedAttention: same cache buffers ([1, S, Hkv, D]), ExecuTorch LLM ops. The layer
    whose `reads_position` is set (layer 0) reads the start position; the others reuse it."""

    def __init__(self, cached: nn.Module, position: StartPosition | None = None, reads_position: bool = True):
        super().__init__()
        self.n_heads, self.head_dim, self.scale = cached.n_heads, cached.head_dim, cached.scale
        self.kv_cache = cached.kv_cache  # keeps the buffer names, so the runtime sees the same mutable state
        self.max_seq_len = int(cached.kv_cache.k_cache.shape[1])
        self.position = position or StartPosition()
        self.reads_position = reads_position

    def forward(self, q, k, v, input_pos, mask):
        if self.reads_position or self.position.value is None:
            start_pos = self.position.read(input_pos, q.shape[1], self.max_seq_len)
        else:
            start_pos = self.position.value
        torch.ops.llama.update_cache(k, self.kv_cache.k_cache, start_pos)
        torch.ops.llama.update_cache(v, self.kv_cache.v_cache, start_pos)
        y = self.attend_cache(q, input_pos, start_pos)
        return y.reshape(1, -1, self.n_heads * self.head_dim)  # -1: a reshape XNNPACK delegates (see LinearRope)

    def attend_cache(self, q, input_pos, start_pos):
        return torch.ops.llama.custom_sdpa(q, self.kv_cache.k_cache, self.kv_cache.v_cache, start_pos, None, 0.0, True,
                                           self.scale)


class EdgekitCacheAttention(CustomSdpaAttention):
    """The same cache writes (llama::update_cache); edgekit::attention attends over the fp32 caches."""

    def attend_cache(self, q, input_pos, start_pos):
        q = q.float()
        factor = self.scale * self.head_dim ** 0.5  # the op's scale is 1/sqrt(D): another one is folded into q
        if factor != 1.0:
            q = q * factor
        return torch.ops.edgekit.attention(q, self.kv_cache.k_cache, self.kv_cache.v_cache, None, None, input_pos)


class RingCustomSdpa(nn.Module):
    """A sliding layer's ring (edgekit.model.graph.RingCachedAttention, kept as a submodule with its buffers) attending through
    llama::custom_sdpa with the ring's mask: given a mask, the op attends over every row it is handed, with grouped
    heads and no repeated K/V. As plain ops the products ran in portable kernels after K/V were expanded to every
    query head: Gemma 3 270M decoded at 10 tok/s (llama.cpp 43) with 15 such layers."""

    def __init__(self, ring: nn.Module):
        super().__init__()
        self.ring = ring  # its forward (mask, row writes) with attend_rows routed here

    def forward(self, q, k, v, input_pos, mask):
        return self.ring(q, k, v, input_pos, mask, attend_rows=self.attend_rows)

    def attend_rows(self, q, k, v, mask):
        return torch.ops.llama.custom_sdpa(q, k, v, 0, mask, 0.0, False, self.ring.scale)


def use_custom_sdpa_rings(decoder: nn.Module) -> int:
    """Swaps every sliding layer's ring attention for RingCustomSdpa; returns how many."""
    from edgekit.model.graph import RingCachedAttention

    load_llm_ops()
    swapped = 0
    for layer in decoder.layers:
        if isinstance(layer.attention.attend, RingCachedAttention):
            layer.attention.attend = RingCustomSdpa(layer.attention.attend)
            swapped += 1
    return swapped


def use_custom_sdpa(decoder: nn.Module, kernel: str = "llama") -> int:
    """Swaps every layer's float-cache `attention.attend` for CustomSdpaAttention (kernel 'llama') or
    EdgekitCacheAttention ('edgekit'), one shared start position read by the first; returns how many were swapped."""
    from edgekit.model.graph import CachedAttention

    load_llm_ops()
    if kernel == "edgekit":
        from edgekit.kernels import ops  # noqa: F401  (registers torch.ops.edgekit.attention)
    cls = EdgekitCacheAttention if kernel == "edgekit" else CustomSdpaAttention
    position, swapped = StartPosition(), 0
    for layer in decoder.layers:
        if isinstance(layer.attention.attend, CachedAttention):
            layer.attention.attend = cls(layer.attention.attend, position, reads_position=swapped == 0)
            swapped += 1
    return swapped


class LinearMeanRMSNorm(nn.Module):
    """RMSNorm whose mean of squares is a [C -> 1] linear with a constant 1/C weight.

    XNNPACK delegates `mean.dim` only over the two innermost dims of 4D tensors, so edgekit's RMSNorm would stay in a
    portable kernel and split every layer into three delegate subgraphs; as a linear it stays inside XNNPACK.
    """

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.eps = norm.eps
        self.weight = norm.weight
        dim = norm.weight.shape[0]
        self.register_buffer("inv_dim", torch.full((1, dim), 1.0 / dim, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        ms = torch.nn.functional.linear(x32 * x32, self.inv_dim)
        return self.weight * (x32 * torch.rsqrt(ms + self.eps)).to(x.dtype)


def use_linear_mean_norms(decoder: nn.Module) -> int:
    """Swaps every RMSNorm of the decoder copy for LinearMeanRMSNorm; returns how many."""
    from edgekit.model.graph import RMSNorm

    targets = [(parent, name, child) for parent in decoder.modules() for name, child in parent.named_children()
               if isinstance(child, RMSNorm)]
    for parent, name, child in targets:
        setattr(parent, name, LinearMeanRMSNorm(child))
    return len(targets)


class LinearRope(nn.Module):
    """Rope whose rotate_half is a [D -> D] linear with a constant signed permutation (exact: one ±1 term per output).

    XNNPACK does not delegate slices of a tensor with a dynamic length, so edgekit's slice + cat rotate_half would
    stay in portable kernels and split every layer into two delegate subgraphs; as a linear the whole layer, from
    o_proj to the next layer's q/k rotation, is one subgraph. (0.5B decode, ETDump: 50 -> 26 delegate calls and
    509 -> 82 portable op calls per step; tokens/s did not measurably change, the int4 GEMMs dominate the step.)
    """

    def __init__(self, head_dim: int):
        super().__init__()
        half = head_dim // 2
        rotation = torch.zeros(head_dim, head_dim, dtype=torch.float32)
        idx = torch.arange(half)
        rotation[idx, idx + half] = -1.0   # out[i] = -x[i + D/2] for i < D/2
        rotation[idx + half, idx] = 1.0    # out[i] = x[i - D/2] for i >= D/2
        self.register_buffer("rotation", rotation, persistent=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return x * cos + torch.nn.functional.linear(x, self.rotation.to(x.dtype)) * sin


def use_linear_rope(decoder: nn.Module) -> int:
    """Swaps every layer's `attention.rope` for LinearRope; returns how many. (A sliding layer must attend through
    RingCustomSdpa by then: with its ring as plain ops beside the rotation in XNNPACK, the partitioner's subgraph
    would depend on them both ways, "Invalid partition, found dependency cycles".)"""
    from edgekit.model.graph import Rope

    swapped = 0
    for layer in decoder.layers:
        if isinstance(layer.attention.rope, Rope):
            layer.attention.rope = LinearRope(layer.attention.head_dim)
            swapped += 1
    return swapped
