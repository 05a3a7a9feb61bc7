"""Round-to-nearest quantization of a float matrix onto per-group grids, and a per-group scale search.

RTN, symmetric: scale = max|w| / ((2**bits - 1) / 2), q = clamp(round(w * (1 / scale)), -2**(bits-1), 2**(bits-1) - 1),
stored as q + 2**(bits-1): torchao's / XNNPACK's symmetric group layout (get_group_qparams_symmetric), so the codes
are the stock ones. RTN with a minimum: scale = (max - min) / (2**bits - 1), m = min, q = round((w - m) / scale)
(GGUF Q4_1's grid). `search=True` tries shrunken ranges per group (a grid of shrink factors, evaluated for the whole
tensor at once), refits each candidate's scale (and minimum) to its codes by least squares, and keeps per group the
candidate with the least squared error; round-to-nearest is one of the candidates, so no group gets worse.
"""
from __future__ import annotations

import torch

from edgekit.quant.tensor import QuantizedTensor

# shrink factors of a group's range tried by the search (1.0 = the full range, as RTN)
SHRINK_GRID = tuple(round(1.0 - 0.025 * i, 3) for i in range(21))  # 1.0 .. 0.5
_CHUNK_ELEMS = 1 << 22  # rows are processed in chunks of ~4M weights to bound the search's temporaries
_EPS = torch.finfo(torch.float32).smallest_normal  # torchao's scale floor for float32


def quantize_tensor(w: torch.Tensor, bits: int, group_size: int, symmetric: bool, search: bool = False, *,
                    scale_dtype: torch.dtype = torch.float32, threads: int | None = 1) -> QuantizedTensor:
    """Quantize a [N, K] float matrix; `scale_dtype=torch.float16` makes scales (and mins) fp16-exact, chosen with
    that rounding in the loop (for kernels that store fp16 scales). `threads`: torch threads while it runs (None:
    leave torch's setting); 1 by default because the many small elementwise kernels ran 14x slower with 2 OpenMP
    threads than with 1 on a shared 2-core machine (SmolLM2's linears searched: 40 s vs 2.8 s)."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _quantize(w, bits, group_size, symmetric, search, scale_dtype)
    finally:
        torch.set_num_threads(previous)


def _quantize(w: torch.Tensor, bits: int, group_size: int, symmetric: bool, search: bool,
              scale_dtype: torch.dtype) -> QuantizedTensor:
    if w.dim() != 2:
        raise ValueError(f"quantize_tensor takes a [N, K] matrix, got shape {list(w.shape)}")
    if not 2 <= bits <= 8:
        raise ValueError(f"bits {bits} is not supported; accepted: 2..8")
    n, k = w.shape
    if group_size <= 0 or k % group_size:
        raise ValueError(f"group_size {group_size} does not divide the row length {k}")
    if scale_dtype not in (torch.float32, torch.float16):
        raise ValueError(f"scale_dtype {scale_dtype} is not supported; accepted: torch.float32, torch.float16")
    w = w.detach().to(torch.float32)
    step = max(1, _CHUNK_ELEMS // k)
    parts = [_quantize_rows(w[i:i + step].reshape(-1, k // group_size, group_size), bits, symmetric, search,
                            scale_dtype) for i in range(0, n, step)]
    codes = torch.cat([p[0] for p in parts]).reshape(n, k)
    scales = torch.cat([p[1] for p in parts])
    mins = None if symmetric else torch.cat([p[2] for p in parts])
    return QuantizedTensor(codes, scales, mins, bits, group_size, "search" if search else "rtn")


def _exact(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return x if dtype == torch.float32 else x.to(dtype).to(torch.float32)


def _quantize_rows(g: torch.Tensor, bits: int, symmetric: bool, search: bool, sdt: torch.dtype):
    """g [n, G, gs] -> (codes uint8 [n, G, gs], scales [n, G], mins [n, G] or None)."""
    if symmetric:
        return _symmetric(g, bits, search, sdt)
    return _asymmetric(g, bits, search, sdt)


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-group inner products [n, G, gs] x [n, G, gs] -> [n, G] (batched matmul: no [n, G, gs] temporary)."""
    return torch.einsum("ngk,ngk->ng", a, b)


def _symmetric(g: torch.Tensor, bits: int, search: bool, sdt: torch.dtype):
    half = 2 ** (bits - 1)
    base = g.abs().amax(-1) / ((2 ** bits - 1) / 2)

    def grid_scale(alpha: float) -> torch.Tensor:
        return _exact(torch.clamp(base * alpha, min=_EPS), sdt).clamp(min=_EPS)

    def codes_for(scale: torch.Tensor) -> torch.Tensor:
        # times the reciprocal, as torchao's quantize_per_channel_group does (a quotient rounds differently at ties)
        return (g * (1.0 / scale)[..., None]).round_().clamp_(-half, half - 1)

    best_s = code_s = grid_scale(1.0)
    if search:
        ww = _dot(g, g).double()

        def error(q_s: torch.Tensor, qq: torch.Tensor, qw: torch.Tensor) -> torch.Tensor:
            s = q_s.double()  # sum of squares expanded: s^2 q.q - 2 s q.w + w.w, in float64 against cancellation
            return s * s * qq.double() - 2 * s * qw.double() + ww

        q = codes_for(code_s)
        best_e = error(best_s, _dot(q, q), _dot(q, g))
        for alpha in SHRINK_GRID:
            cs = grid_scale(alpha)
            q = codes_for(cs)
            qq, qw = _dot(q, q), _dot(q, g)
            s = _exact(torch.where(qq > 0, qw / qq.clamp(min=1), cs), sdt).clamp(min=_EPS)  # least squares
            e = error(s, qq, qw)
            better = e < best_e
            best_e = torch.where(better, e, best_e)
            best_s, code_s = torch.where(better, s, best_s), torch.where(better, cs, code_s)
    return (codes_for(code_s) + half).to(torch.uint8), best_s, None


def _asymmetric(g: torch.Tensor, bits: int, search: bool, sdt: torch.dtype):
    top = 2 ** bits - 1
    lo, hi = g.amin(-1), g.amax(-1)
    span = hi - lo

    def grid(alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
        return (_exact(torch.clamp(span * alpha / top, min=_EPS), sdt).clamp(min=_EPS),
                _exact(lo + span * (1 - alpha) / 2, sdt))

    def codes_for(scale: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return ((g - m[..., None]) * (1.0 / scale)[..., None]).round_().clamp_(0, top)

    best_s, best_m = code_s, code_m = grid(1.0)
    if search:
        n = g.shape[-1]
        sw, ww = g.sum(-1).double(), _dot(g, g).double()
        ones = torch.ones_like(g[..., :1]).expand_as(g)

        def error(s, m, sq, qq, qw):  # sum of (s q + m - w)^2 expanded, in float64
            s, m, sq, qq, qw = (t.double() for t in (s, m, sq, qq, qw))
            return s * s * qq + n * m * m + ww + 2 * s * m * sq - 2 * s * qw - 2 * m * sw

        q = codes_for(code_s, code_m)
        best_e = error(best_s, best_m, _dot(q, ones), _dot(q, q), _dot(q, g))
        for alpha in SHRINK_GRID:
            cs, cm = grid(alpha)
            q = codes_for(cs, cm)
            sq, qq, qw = _dot(q, ones), _dot(q, q), _dot(q, g)
            det = n * qq - sq * sq
            # least-squares (scale, min) for these codes; codes all equal: keep the grid's scale, fit the minimum
            s = _exact(torch.where(det > 0, (n * qw - sq * sw.float()) / det.clamp(min=1e-30), cs).clamp(min=_EPS),
                       sdt).clamp(min=_EPS)
            m = _exact((sw.float() - s * sq) / n, sdt)
            e = error(s, m, sq, qq, qw)
            better = e < best_e
            best_e = torch.where(better, e, best_e)
            best_s, best_m = torch.where(better, s, best_s), torch.where(better, m, best_m)
            code_s, code_m = torch.where(better, cs, code_s), torch.where(better, cm, code_m)
    return codes_for(code_s, code_m).to(torch.uint8), best_s, best_m
