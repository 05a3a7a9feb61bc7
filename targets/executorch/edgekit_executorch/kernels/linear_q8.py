"""`edgekit::linear_q8` and `edgekit::embedding_q8`: a Q8_0 table (int8 codes, one fp16 scale per group) as one
constant that both the token lookup and the output layer read, so a tied table is stored once in the .pte.

    edgekit::linear_q8(Tensor x, Tensor packed, Tensor scales, int group_size, int out_features,
                       Tensor? norm_weight, float norm_eps) -> Tensor
    edgekit::embedding_q8(Tensor packed, Tensor scales, Tensor indices, int num_embeddings, int embedding_dim,
                          int group_size) -> Tensor

Meaning and layout: edgekit/kernels/q8.py (the head: an optional RMSNorm, activations per group of `group_size`,
symmetric int8, times the int8 codes: llama.cpp's Q8_0 x Q8_0; the lookup: rows of s * code, exact). The kernels are
edgekit/kernels/csrc/linear_q8_tiles.h inside linear_q4.h's linear().

Before, a tied Q8_0 table took two copies: int8 for quantized_decomposed's embedding kernel (+ fp32 scales) and, for
the head, its codes' nibbles as two 4-bit grids with fp16 scales and minimums (~35 MB of SmolLM2-135M's 135 MB .pte).
"""
from __future__ import annotations

import torch
from torch import nn

from edgekit.kernels.ops import register_op
from edgekit.kernels.q8 import pack_q8, reference_embedding_q8, reference_linear_q8

_lib = torch.library.Library("edgekit", "FRAGMENT")
_LINEAR = ("Tensor x, Tensor packed, Tensor scales, int group_size, int out_features, Tensor? norm_weight, "
           "float norm_eps")
_lib.define(f"linear_q8({_LINEAR}) -> Tensor")
_lib.define(f"linear_q8.out({_LINEAR}, *, Tensor(a!) out) -> Tensor(a!)")
_EMBEDDING = "Tensor packed, Tensor scales, Tensor indices, int num_embeddings, int embedding_dim, int group_size"
_lib.define(f"embedding_q8({_EMBEDDING}) -> Tensor")
_lib.define(f"embedding_q8.out({_EMBEDDING}, *, Tensor(a!) out) -> Tensor(a!)")


def et_linear_q8(x, packed, scales, group_size, out_features, norm_weight, norm_eps) -> torch.Tensor:
    return reference_linear_q8(x, packed, scales, group_size, out_features, norm_weight, norm_eps)


def et_embedding_q8(packed, scales, indices, num_embeddings, embedding_dim, group_size) -> torch.Tensor:
    return reference_embedding_q8(packed, scales, indices, num_embeddings, embedding_dim, group_size)


def _linear_fake(x, packed, scales, group_size, out_features, norm_weight, norm_eps):
    return x.new_empty((*x.shape[:-1], out_features), dtype=torch.float32)


def _embedding_fake(packed, scales, indices, num_embeddings, embedding_dim, group_size):
    return indices.new_empty((*indices.shape, embedding_dim), dtype=torch.float32)


register_op(_lib, "linear_q8", et_linear_q8, _linear_fake)
register_op(_lib, "embedding_q8", et_embedding_q8, _embedding_fake)


class Q8Table(nn.Module):
    """A Q8_0 table [N, K] in the kernel's layout: int8 codes (-128..127, w = s * code) and fp16 scales per group."""

    def __init__(self, codes: torch.Tensor, scales: torch.Tensor, group: int):
        super().__init__()
        self.rows, self.dim = codes.shape
        self.group_size = group
        packed, s16 = pack_q8(codes, scales, group, torch.float16)
        self.register_buffer("packed", packed)
        self.register_buffer("scales", s16)


class Q8Embedding(nn.Module):
    """The token lookup over a Q8Table (shared with the head when the embedding is tied)."""

    def __init__(self, table: Q8Table):
        super().__init__()
        self.table = table

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = self.table
        return torch.ops.edgekit.embedding_q8(t.packed, t.scales, tokens, t.rows, t.dim, t.group_size)


class Q8Linear(nn.Module):
    """One linear over a Q8Table in edgekit::linear_q8 (no norm), plus its bias."""

    def __init__(self, table: Q8Table, bias: torch.Tensor | None):
        super().__init__()
        self.table = table
        self.register_buffer("bias", None if bias is None else bias.detach().to(torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.table
        y = torch.ops.edgekit.linear_q8(x, t.packed, t.scales, t.group_size, t.rows, None, 0.0)
        return y if self.bias is None else y + self.bias


class Q8Output(nn.Module):
    """The final RMSNorm and the output layer over a Q8Table in one edgekit::linear_q8 call (the decoder's own norm
    becomes Identity)."""

    def __init__(self, norm: nn.Module, table: Q8Table):
        super().__init__()
        self.table = table
        self.register_buffer("norm", norm.weight.detach().to(torch.float32))
        self.eps = float(norm.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.table
        return torch.ops.edgekit.linear_q8(x, t.packed, t.scales, t.group_size, t.rows, self.norm, self.eps)
