"""The quantized attention ops: schemas, fake (meta) kernels and the PyTorch reference that defines their meaning.

`edgekit::attention(q, k_cache, v_cache, k_scale, v_scale, input_pos) -> out`
    q [1, T, Hq, D] float; caches [1, S, Hkv, D] int8 with fp32 scales [1, S, Hkv] (one symmetric scale per
    position and kv head; dequantized value = int8 * scale), or float caches with both scales None.
    Query row t attends to cache positions j <= input_pos[t] (causal from input_pos); query head h reads kv head
    h // (Hq // Hkv) (grouped-query). Softmax scale 1/sqrt(D). out [1, T, Hq, D] float32.
`edgekit::update_int8_cache(value, cache!, scale!, input_pos) -> dummy`
    value [1, T, Hkv, D] float; quantizes each (t, kv head) row symmetrically (scale = amax / 127, 1 where amax == 0,
    q = clamp(round_half_even(x / scale), -127, 127)) and writes it and its scale at position input_pos[t],
    mutating `cache` [1, S, Hkv, D] int8 and `scale` [1, S, Hkv] fp32 in place. Returns a [1] tensor (like
    ExecuTorch's own `llama::update_cache`), so the op has an output to hang the `.out` overload on.

Both have `.out` overloads (ExecuTorch serializes only out variants; its to_executorch pass swaps them in) and
fake kernels, so torch.export captures each as one node; the in-place write stays in place through
ExecuTorch's `unsafe_remove_auto_functionalized_pass`.
"""
from __future__ import annotations

import math

import torch

QMAX = 127  # symmetric int8: -127..127 (never -128, so negation and the scale are exact)

_lib = torch.library.Library("edgekit", "DEF")
_lib.define(
    "attention(Tensor q, Tensor k_cache, Tensor v_cache, Tensor? k_scale, Tensor? v_scale, Tensor input_pos) -> Tensor"
)
_lib.define(
    "attention.out(Tensor q, Tensor k_cache, Tensor v_cache, Tensor? k_scale, Tensor? v_scale, Tensor input_pos, *, "
    "Tensor(a!) out) -> Tensor(a!)"
)
_lib.define("update_int8_cache(Tensor value, Tensor(a!) cache, Tensor(b!) scale, Tensor input_pos) -> Tensor")
_lib.define(
    "update_int8_cache.out(Tensor value, Tensor(a!) cache, Tensor(b!) scale, Tensor input_pos, *, "
    "Tensor(c!) out) -> Tensor(c!)"
)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., D] float -> (int8 [..., D], fp32 scale [...]): symmetric, one scale per row."""
    x32 = x.float()
    scale = x32.abs().amax(dim=-1) / QMAX
    scale = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = torch.clamp(torch.round(x32 / scale.unsqueeze(-1)), -QMAX, QMAX).to(torch.int8)
    return q, scale


def dequantize_cache(cache: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """[1, S, Hkv, D] int8 + [1, S, Hkv] fp32 -> float32 [1, S, Hkv, D]; float caches pass through as float32."""
    if scale is None:
        return cache.float()
    return cache.float() * scale.unsqueeze(-1)


def reference_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, k_scale: torch.Tensor | None,
                        v_scale: torch.Tensor | None, input_pos: torch.Tensor) -> torch.Tensor:
    """Plain fp32 math over the dequantized caches: the definition every kernel is tested against."""
    _check_attention_args(q, k_cache, v_cache, k_scale, v_scale, input_pos)
    _, t, hq, d = q.shape
    s, hkv = k_cache.shape[1], k_cache.shape[2]
    k = dequantize_cache(k_cache, k_scale)[0].transpose(0, 1)  # [Hkv, S, D]
    v = dequantize_cache(v_cache, v_scale)[0].transpose(0, 1)
    rep = hq // hkv
    k, v = k.repeat_interleave(rep, dim=0), v.repeat_interleave(rep, dim=0)  # [Hq, S, D]
    qh = q[0].float().transpose(0, 1)  # [Hq, T, D]
    scores = torch.matmul(qh, k.transpose(1, 2)) / math.sqrt(d)  # [Hq, T, S]
    visible = torch.arange(s)[None, :] <= input_pos[:, None]  # [T, S]
    scores = scores.masked_fill(~visible[None], float("-inf"))
    y = torch.matmul(torch.softmax(scores, dim=-1), v)  # [Hq, T, D]
    return y.transpose(0, 1).reshape(1, t, hq, d).contiguous()


def reference_update_int8_cache(value: torch.Tensor, cache: torch.Tensor, scale: torch.Tensor,
                                input_pos: torch.Tensor) -> torch.Tensor:
    _check_update_args(value, cache, scale, input_pos)
    qv, sv = quantize_rows(value)
    cache.index_copy_(1, input_pos, qv)
    scale.index_copy_(1, input_pos, sv)
    return torch.zeros(1, dtype=torch.float32)


def _check_attention_args(q, k_cache, v_cache, k_scale, v_scale, input_pos) -> None:
    torch._check(q.dim() == 4 and q.shape[0] == 1, lambda: f"q must be [1, T, Hq, D], got {tuple(q.shape)}")
    torch._check(k_cache.dim() == 4 and k_cache.shape == v_cache.shape,
                 lambda: f"caches must be [1, S, Hkv, D] and equal, got {tuple(k_cache.shape)}, {tuple(v_cache.shape)}")
    torch._check(q.shape[3] == k_cache.shape[3], lambda: f"head dim of q {q.shape[3]} != cache {k_cache.shape[3]}")
    torch._check(q.shape[2] % k_cache.shape[2] == 0,
                 lambda: f"query heads {q.shape[2]} must be a multiple of kv heads {k_cache.shape[2]}")
    quantized = k_cache.dtype == torch.int8
    torch._check(quantized == (k_scale is not None) == (v_scale is not None) and v_cache.dtype == k_cache.dtype,
                 lambda: "int8 caches need k_scale and v_scale [1, S, Hkv]; float caches take None for both")
    torch._check(input_pos.dim() == 1 and input_pos.shape[0] == q.shape[1],
                 lambda: f"input_pos must be [T] with T = {q.shape[1]}, got {tuple(input_pos.shape)}")


def _check_update_args(value, cache, scale, input_pos) -> None:
    torch._check(cache.dtype == torch.int8 and scale.dtype == torch.float32,
                 lambda: f"cache must be int8 and scale float32, got {cache.dtype}, {scale.dtype}")
    torch._check(value.dim() == 4 and value.shape[2:] == cache.shape[2:],
                 lambda: f"value {tuple(value.shape)} does not fit cache {tuple(cache.shape)}")
    torch._check(scale.shape == cache.shape[:3], lambda: f"scale must be {tuple(cache.shape[:3])}")
    torch._check(input_pos.dim() == 1 and input_pos.shape[0] == value.shape[1],
                 lambda: f"input_pos must be [T] with T = {value.shape[1]}")


def register_op(lib: torch.library.Library, name: str, reference, fake) -> None:
    """Registers an op defined in `lib` with its `.out` overload: `reference` is the CPU kernel (the PyTorch
    definition), `fake` its meta kernel; `.out` runs the reference and copies the result into `out`."""

    def out_cpu(*args, out):
        out.copy_(reference(*args))
        return out

    torch.library.impl(lib, name, "CompositeExplicitAutograd")(reference)
    torch.library.impl(lib, f"{name}.out", "CompositeExplicitAutograd")(out_cpu)
    torch.library.register_fake(f"{lib.ns}::{name}")(fake)
    torch.library.register_fake(f"{lib.ns}::{name}.out")(lambda *args, out: out)


@torch.library.impl(_lib, "update_int8_cache", "CompositeExplicitAutograd")
def _update_cpu(value, cache, scale, input_pos):
    return reference_update_int8_cache(value, cache, scale, input_pos)


@torch.library.impl(_lib, "update_int8_cache.out", "CompositeExplicitAutograd")
def _update_out_cpu(value, cache, scale, input_pos, *, out):
    reference_update_int8_cache(value, cache, scale, input_pos)
    out.zero_()
    return out


def _attention_fake(q, k_cache, v_cache, k_scale, v_scale, input_pos):
    _check_attention_args(q, k_cache, v_cache, k_scale, v_scale, input_pos)
    return q.new_empty(q.shape, dtype=torch.float32)


register_op(_lib, "attention", reference_attention, _attention_fake)


@torch.library.register_fake("edgekit::update_int8_cache")
def _update_fake(value, cache, scale, input_pos):
    _check_update_args(value, cache, scale, input_pos)
    return value.new_empty((1,), dtype=torch.float32)


@torch.library.register_fake("edgekit::update_int8_cache.out")
def _update_out_fake(value, cache, scale, input_pos, *, out):
    return out
