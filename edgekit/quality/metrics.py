"""Per-token figures from two rows of logits: KL(reference || artifact), same top token, negative log-likelihoods."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@dataclass
class TokenFigures:
    """One entry per scored position."""

    kl: np.ndarray           # KL(p_ref || p_art), nats
    same_top: np.ndarray     # bool: argmax agrees
    nll_ref: np.ndarray      # -log p_ref(next token); NaN where the next token is unknown (end of text)
    nll_art: np.ndarray
    ref_info: np.ndarray     # KL(p_ref || uniform) = log V - H(p_ref): how far the reference is from knowing nothing


def token_figures(ref: np.ndarray, art: np.ndarray, targets: np.ndarray) -> TokenFigures:
    """ref, art: logits [N, V]; targets: int [N], the token that follows each position (-1: none)."""
    if ref.shape != art.shape:
        from edgekit.errors import EvaluationError

        raise EvaluationError(f"the artifact's logits have shape {art.shape}, the reference's {ref.shape}; "
                              "they must cover the same positions and vocabulary")
    lp, lq = log_softmax(ref), log_softmax(art)
    p = np.exp(lp)
    kl = np.maximum((p * (lp - lq)).sum(-1), 0.0)   # tiny negative values are rounding
    ref_info = np.log(ref.shape[-1]) + (p * lp).sum(-1)
    rows = np.arange(len(targets))
    known = targets >= 0
    safe = np.where(known, targets, 0)
    nll_ref = np.where(known, -lp[rows, safe], np.nan)
    nll_art = np.where(known, -lq[rows, safe], np.nan)
    return TokenFigures(kl, ref.argmax(-1) == art.argmax(-1), nll_ref, nll_art, ref_info)
