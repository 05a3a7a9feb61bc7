"""Teacher-forced windows over a token stream: which positions are scored, and how a Session produces their logits.

Each window covers `length` tokens (at most the artifact's max_seq_len) and starts from an empty KV cache. Its first
`context` tokens are prefilled in one call, so every scored position sees at least `context - 1` earlier tokens; the
positions from `context - 1` to the end are scored. Windows follow each other so that every token of the stream is
scored exactly once (the first `context - 1` of the stream excepted). Sessions returning every position's logits get
the rest of the window in a second call; last_logits_only sessions decode it one token per call.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.runtime.session import positions


@dataclass(frozen=True)
class Window:
    start: int        # index of its first token in the stream
    length: int       # tokens fed
    context: int      # tokens prefilled before the first scored position's logits come out

    @property
    def scored(self) -> range:
        """Stream indices whose next-token distribution is scored."""
        return range(self.start + self.context - 1, self.start + self.length)


def plan(n_tokens: int, length: int, max_scored: int | None = None, max_windows: int | None = None) -> list[Window]:
    """Windows of `length` tokens with half of each as context; at most `max_scored` scored positions and
    `max_windows` windows, spread evenly over the whole stream (so a budget still samples every part of the text)."""
    context = max(1, length // 2)
    step = length - context + 1
    out = []
    start = 0
    while start + context <= n_tokens:
        out.append(Window(start, min(length, n_tokens - start), context))
        start += step
    keep = len(out)
    if max_scored is not None:
        keep = min(keep, max(1, max_scored // step))
    if max_windows is not None:
        keep = min(keep, max(1, max_windows))
    if out and keep < len(out):
        out = [out[i] for i in np.linspace(0, len(out) - 1, keep).round().astype(int)]
    return out


def window_logits(session, tokens: list[int], w: Window) -> np.ndarray:
    """The session's logits at the window's scored positions: float32 [len(w.scored), V]."""
    seq = tokens[w.start:w.start + w.length]
    session.reset()
    first = np.asarray(session.forward(np.asarray([seq[:w.context]], dtype=np.int64), positions(0, w.context)))
    rows = [first[0, -1:]]
    rest = seq[w.context:]
    if rest and not getattr(session, "last_logits_only", False):
        out = np.asarray(session.forward(np.asarray([rest], dtype=np.int64), positions(w.context, len(rest))))
        rows.append(out[0])
    else:
        for i, tok in enumerate(rest):
            out = np.asarray(session.forward(np.asarray([[tok]], dtype=np.int64), positions(w.context + i, 1)))
            rows.append(out[0, -1:])
    return np.concatenate(rows).astype(np.float32)


def reference_logits(session, tokens: list[int], w: Window) -> np.ndarray:
    """The same positions from a full-logits session in one call (the eager reference)."""
    seq = tokens[w.start:w.start + w.length]
    session.reset()
    out = np.asarray(session.forward(np.asarray([seq], dtype=np.int64), positions(0, len(seq))))
    return out[0, w.context - 1:].astype(np.float32)
