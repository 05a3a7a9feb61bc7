"""GPTQ (Frantar et al. 2022): a [N, K] linear quantized one input column at a time, each column's rounding error
pushed onto the columns not yet quantized through the inverse Hessian of the layer's inputs, H = X^T X.

What it minimises is the layer's output error on the calibration activations, ||X W^T - X Q^T||^2, not the weight
error RTN minimises; on real weights that is what the next layer (and the logits) see. The grid is the same as RTN's
(edgekit.quant.rtn): symmetric scale = max|w| / ((2**bits - 1) / 2), codes + 2**(bits-1); with a minimum
scale = (max - min) / (2**bits - 1). A group's scale is fixed from the (error-updated) weights when the sweep reaches
its first column, as in the reference implementation; with act_order the columns go in order of decreasing H
diagonal and every group's scale is fixed up front from the original weights ("static groups"), so the stored layout
stays plain contiguous groups. After the sweep (refine), each row's group scales are refitted to the codes by least
squares in H's metric (refit_scales).

K that the group size does not divide is padded with zero columns to whole groups (as ONNX Runtime's MatMulNBits
packs a 576-wide row into 5 blocks of 128): the returned QuantizedTensor is then [N, K_padded], its first K columns
the weight, the rest code for exactly 0.
"""
from __future__ import annotations

import torch

from edgekit.quant.tensor import QuantizedTensor

# H += DAMP * mean(diag H) * I before the sweep. 1 % kept over 10 %: SmolLM2-135M float weights, ONNX int4 g128
# level 1, output layer by GPTQ too, refit on, shipped 3,944-token calibration text: mean KL 0.2274 at 1 % vs
# 0.2339 at 10 % (RTN 0.5084; benchmarks/results/calib.md)
DAMP = 0.01
BLOCK = 128         # columns updated together (lazy batch updates): one rank-128 update of the rest per block
_EPS = torch.finfo(torch.float32).smallest_normal


def padded_width(k: int, group_size: int) -> int:
    return -(-k // group_size) * group_size


def gptq_quantize(w: torch.Tensor, h: torch.Tensor, bits: int, group_size: int, symmetric: bool = True, *,
                  damp: float = DAMP, act_order: bool = False, refine: bool = True) -> QuantizedTensor:
    """w float [N, K], h [K, K] (sum of x x^T over calibration tokens, any positive scale) -> QuantizedTensor.

    `damp`: added to H's diagonal as a fraction of its mean diagonal. `refine` (symmetric grids only): after the
    sweep, each group's scale refitted with its codes fixed (refit_scales)."""
    if w.dim() != 2 or h.shape != (w.shape[1], w.shape[1]):
        raise ValueError(f"gptq_quantize takes w [N, K] and h [K, K], got {list(w.shape)} and {list(h.shape)}")
    n, k = w.shape
    kp = padded_width(k, group_size)
    W = torch.zeros(n, kp, dtype=torch.float32)
    W[:, :k] = w.detach().float()
    H = torch.zeros(kp, kp, dtype=torch.float64)
    H[:k, :k] = h.double()
    dead = torch.diagonal(H) == 0        # inputs never active (or padding): weight 0, quantized to code 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    scales, mins = _group_params(W, bits, group_size, symmetric)   # static: used as they are with act_order
    W0, H0 = W, H                                                   # what the refit fits to (unpermuted, undamped)
    perm = torch.argsort(torch.diagonal(H), descending=True) if act_order else torch.arange(kp)
    W, H = W[:, perm], H[perm][:, perm]
    H += torch.eye(kp, dtype=torch.float64) * (damp * torch.diagonal(H).mean())
    hinv = _inverse_cholesky(H).float()
    codes = torch.empty(n, kp, dtype=torch.float32)
    group_of = perm // group_size
    step = group_size * max(1, BLOCK // group_size)   # whole groups per block: a group's columns are all in w1
    for b0 in range(0, kp, step):
        b1 = min(b0 + step, kp)
        w1, h1 = W[:, b0:b1].clone(), hinv[b0:b1, b0:b1]
        err = torch.empty_like(w1)
        for j in range(b1 - b0):
            col = b0 + j
            if not act_order and col % group_size == 0:   # the group's scale from the weights as updated so far
                g = col // group_size
                s, m = _group_params(w1[:, j:j + group_size], bits, group_size, symmetric)
                scales[:, g], mins[:, g] = s[:, 0], m[:, 0]
            g = int(group_of[col])
            q = _round(w1[:, j], scales[:, g], mins[:, g], bits, symmetric)
            codes[:, col] = q
            deq = _dequant(q, scales[:, g], mins[:, g], bits, symmetric)
            e = (w1[:, j] - deq) / h1[j, j]
            w1[:, j:] -= e[:, None] * h1[j, j:][None, :]
            err[:, j] = e
        W[:, b1:] -= err @ hinv[b0:b1, b1:]
    codes = codes[:, torch.argsort(perm)]
    if refine and symmetric:
        H0 = H0 + torch.eye(kp, dtype=torch.float64) * (damp * torch.diagonal(H0).mean())
        scales = refit_scales(W0, codes - 2 ** (bits - 1), H0, group_size, scales)
    return QuantizedTensor(codes.to(torch.uint8), scales.contiguous(), None if symmetric else mins.contiguous(),
                           bits, group_size, "gptq")


def refit_scales(w: torch.Tensor, q: torch.Tensor, h: torch.Tensor, group_size: int, scales: torch.Tensor,
                 rows: int = 1024) -> torch.Tensor:
    """Every group's symmetric scale refitted with the codes fixed, in H's metric: for one row (original weights w,
    signed codes q, q_g the codes of group g zero elsewhere), the scales s minimising
    (w - sum_g s_g q_g)^T H (w - sum_g s_g q_g), i.e. the G x G system A s = b with A_gh = q_g^T H q_h, b_g = q_g^T H w.

    The sweep fixes a group's scale before its codes (from max|w|, RTN's choice); once the codes are known, other
    scales reproduce the layer's output on the calibration inputs better. The fit is joint over the row's groups,
    not one group at a time on its diagonal block H_gg (s_g = q_g^T H_gg w / q_g^T H_gg q_g): the sweep has pushed
    each group's error into the later groups, and refitting one group while ignoring that coupling made the output
    error 1.25-1.28x larger than no refit with act_order on tests/core/test_quant_gptq.py's correlated layers (3
    seeds), and on SmolLM2-135M ONNX int4 g128 its mean KL was 0.3531 against 0.2622 without refit and 0.2274 with
    the joint fit; the joint fit cannot be worse than the old scales, which are one of the points it minimises over.
    With H = identity it is each group's own least-squares scale q_g . w_g / q_g . q_g.
    A group whose codes are all 0 keeps its scale (it has no say); a row whose fit is not positive definite or gives
    a scale <= 0 keeps its old scales. w, q float [N, G * group_size], h float64 square, scales [N, G] -> [N, G]."""
    n, kp = w.shape
    g = kp // group_size
    hr = h.reshape(g, group_size, g, group_size)
    eye = torch.eye(g, dtype=torch.float64)
    out = scales.clone()
    for r0 in range(0, n, rows):      # rows at a time: the output layer's 49k rows at once would be GBs of float64
        qd = q[r0:r0 + rows].double().reshape(-1, g, group_size)
        wd = w[r0:r0 + rows].double().reshape(-1, g, group_size)
        old = out[r0:r0 + rows].double()
        qh = torch.einsum("nai,aibj->nabj", qd, hr)                   # [n, G, G, gs]: q_g^T H_g. per group pair
        A = torch.einsum("nabj,nbj->nab", qh, qd)
        b = torch.einsum("nabj,nbj->na", qh, wd)
        silent = (qd == 0).all(-1)                                    # [n, G]: groups with no nonzero code
        keep = silent[:, :, None] | silent[:, None, :]
        A = torch.where(keep, eye.expand_as(A), A)
        b = torch.where(silent, old, b)
        L, info = torch.linalg.cholesky_ex(A)
        fit = torch.cholesky_solve(b[..., None], L)[..., 0]
        bad = (info != 0) | (fit <= 0).any(-1) | ~torch.isfinite(fit).all(-1)
        out[r0:r0 + rows] = torch.where(bad[:, None], old, fit).to(out.dtype).clamp(min=_EPS)
    return out


def _inverse_cholesky(H: torch.Tensor) -> torch.Tensor:
    """The upper Cholesky factor of H^-1 (what the column sweep reads), damping more if H is not positive enough."""
    for extra in (0.0, 0.01, 0.1, 1.0):
        Hd = H + torch.eye(H.shape[0], dtype=H.dtype) * (extra * torch.diagonal(H).mean())
        L, info = torch.linalg.cholesky_ex(Hd)
        if int(info) == 0:
            return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    raise ValueError("the calibration Hessian is not positive definite even damped; give more calibration text")


def _group_params(W: torch.Tensor, bits: int, group_size: int, symmetric: bool
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """RTN's per-group (scale, min) of W [N, G * group_size] -> ([N, G], [N, G]; mins 0 when symmetric)."""
    g = W.reshape(W.shape[0], -1, group_size)
    if symmetric:
        s = (g.abs().amax(-1) / ((2 ** bits - 1) / 2)).clamp(min=_EPS)
        return s, torch.zeros_like(s)
    lo, hi = g.amin(-1), g.amax(-1)
    return ((hi - lo) / (2 ** bits - 1)).clamp(min=_EPS), lo


def _round(w: torch.Tensor, s: torch.Tensor, m: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """Unsigned codes (float) of one column."""
    if symmetric:
        half = 2 ** (bits - 1)
        return (w * (1.0 / s)).round().clamp(-half, half - 1) + half
    return ((w - m) * (1.0 / s)).round().clamp(0, 2 ** bits - 1)


def _dequant(q: torch.Tensor, s: torch.Tensor, m: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    return s * (q - 2 ** (bits - 1)) if symmetric else s * q + m
