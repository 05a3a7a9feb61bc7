"""The SmolLM2 end-to-end check shared by the ExecuTorch and ONNX int8-cache tests: 256 teacher-forced tokens of one
fixed English text (a 128-token prefill chunk, then 128 single-token decode steps, so both kernel paths run)."""
from __future__ import annotations

import numpy as np

TEXT = ("The history of the printing press begins in the fifteenth century, when Johannes Gutenberg combined "
        "movable metal type, oil-based inks and a wooden press adapted from wine making. Within fifty years "
        "printers were at work in more than two hundred cities, and the number of books in Europe grew from "
        "thousands to millions. Scholars could compare identical copies, scientists shared their tables and "
        "drawings without copying errors, and reformers spread pamphlets faster than authorities could ban "
        "them. Literacy rose, vernacular languages gained prestige, and the modern idea of authorship took "
        "shape as printers began to credit writers on title pages. ")
N_TOKENS, PREFILL = 256, 128
MIN_AGREEMENT = 0.99   # top-1 agreement of the int8-cache export with the fp32-cache export


def smollm2_tokens(model) -> np.ndarray:
    ids = model.tokenizer.encode(TEXT * 3)[:N_TOKENS]
    assert len(ids) == N_TOKENS
    return np.asarray(ids, dtype=np.int64)


def teacher_forced_logits(session, tokens: np.ndarray) -> np.ndarray:
    """[N_TOKENS, V] float32: the logits predicting each next token, the text fed whatever the model predicts."""
    session.reset()
    first = np.asarray(session.forward(tokens[None, :PREFILL], np.arange(PREFILL, dtype=np.int64)))[0]
    rows = [first] if first.shape[0] == PREFILL else None
    assert rows is not None, "the e2e check needs full logits (last_logits_only=False)"
    for i in range(PREFILL, N_TOKENS):
        rows.append(np.asarray(session.forward(tokens[None, i:i + 1], np.array([i], dtype=np.int64)))[0, -1:])
    return np.concatenate(rows).astype(np.float32)


def teacher_forced_top1(session, tokens: np.ndarray) -> np.ndarray:
    return teacher_forced_logits(session, tokens).argmax(-1)


def top2_margins(logits: np.ndarray) -> np.ndarray:
    """top-1 minus top-2 logit per row: how close each prediction was to a tie."""
    part = np.sort(logits, axis=-1)[:, -2:]
    return part[:, 1] - part[:, 0]
