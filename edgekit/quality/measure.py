"""Teacher-forced measurement of one Session against the eager fp32 reference over a token stream."""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from edgekit.errors import EvaluationError
from edgekit.quality.metrics import token_figures
from edgekit.quality.report import QualityReport, WorstWindow
from edgekit.quality.windows import Window, plan, reference_logits, window_logits
from edgekit.runtime.session import EagerSession

if TYPE_CHECKING:
    from edgekit.model.graph import Decoder
    from edgekit.model.tokenizer import Tokenizer

WORST_TEXT_CHARS = 240
GROUP_BYTES = 256 << 20   # reference logits held at once
SMALL_HIDDEN = 256


def measure(session, reference: Decoder, tokens: list[int], tokenizer: Tokenizer | None, *, window: int,
            max_tokens: int | None = None, max_windows: int | None = None, worst: int = 3, labels: dict[str, str],
            on_window: Callable[[int, int], None] | None = None) -> QualityReport:
    """Score `tokens` in windows of `window` tokens; `labels` fills the report's runtime/target/quant/text fields."""
    windows = plan(len(tokens), window, max_tokens, max_windows)
    if not windows:
        raise EvaluationError(f"the text has {len(tokens)} tokens; one window of this artifact (max_seq_len "
                              f"{window}) needs at least {max(1, window // 2)}: give a longer text")
    t0 = time.perf_counter()
    ref_session = EagerSession(reference)
    per_window, figures = [], []
    done = 0
    for group in _groups(windows, reference.config.vocab_size):
        # all of a group's reference windows, then all of its artifact windows: a runtime's worker threads still
        # spinning after its last call (ONNX Runtime's do) starve torch's threads when the two alternate per window
        with torch.no_grad(), _threads_for(reference):
            refs = [reference_logits(ref_session, tokens, w) for w in group]
        for w, ref in zip(group, refs):
            got = window_logits(session, tokens, w)
            _check_finite(got, w)
            targets = np.asarray([tokens[j + 1] if j + 1 < len(tokens) else -1 for j in w.scored], dtype=np.int64)
            f = token_figures(ref, got, targets)
            figures.append(f)
            per_window.append((w, f))
            done += 1
            if on_window is not None:
                on_window(done, len(windows))
    kl = np.concatenate([f.kl for f in figures])
    same = np.concatenate([f.same_top for f in figures])
    nll_ref = np.concatenate([f.nll_ref for f in figures])
    nll_art = np.concatenate([f.nll_art for f in figures])
    info = np.concatenate([f.ref_info for f in figures])
    return QualityReport(
        mean_kl=float(kl.mean()), same_top=float(same.mean()),
        perplexity=float(np.exp(np.nanmean(nll_art))), reference_perplexity=float(np.exp(np.nanmean(nll_ref))),
        tokens=int(kl.size), windows=len(windows), window_tokens=window, max_kl=float(kl.max()),
        reference_information=float(info.mean()), seconds=time.perf_counter() - t0,
        worst=_worst(per_window, tokens, tokenizer, worst), **labels)


@contextlib.contextmanager
def _threads_for(reference: Decoder) -> Iterator[None]:
    """One torch thread for a small model: its matmuls are too small to split, and the threads' hand-offs cost more
    than they save (a 64-wide test model: 0.44 s vs 2.1 s for 300 tokens with 2 threads on a busy 2-core host)."""
    small = reference.config.hidden_size < SMALL_HIDDEN
    before = torch.get_num_threads()
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small:
            torch.set_num_threads(before)


def _groups(windows: list[Window], vocab: int) -> list[list[Window]]:
    """Consecutive windows whose reference logits fit in GROUP_BYTES."""
    per = max(1, GROUP_BYTES // max(1, 4 * vocab * (windows[0].length - windows[0].context + 1)))
    return [windows[i:i + per] for i in range(0, len(windows), per)]


def _check_finite(got: np.ndarray, w: Window) -> None:
    if not np.isfinite(got).all():
        bad = int(np.argmax(~np.isfinite(got).all(axis=-1)))
        raise EvaluationError(f"the artifact produced non-finite logits (NaN/Inf) at token {w.scored[bad]} of the "
                              f"text (window starting at token {w.start}); its quality cannot be measured")


def _worst(per_window, tokens: list[int], tokenizer, count: int) -> list[WorstWindow]:
    ranked = sorted(per_window, key=lambda wf: -float(wf[1].kl.mean()))[:count]
    out = []
    for w, f in ranked:
        ids = tokens[w.scored.start:w.scored.stop]
        text = tokenizer.decode(ids) if tokenizer is not None else " ".join(map(str, ids))
        if len(text) > WORST_TEXT_CHARS:
            text = text[:WORST_TEXT_CHARS - 1] + "…"
        out.append(WorstWindow(start=w.scored.start, tokens=len(ids), mean_kl=float(f.kl.mean()),
                               same_top=float(f.same_top.mean()), text=text))
    return out
