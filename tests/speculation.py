"""Checks every target's session must pass for speculative decoding (edgekit/runtime/speculate.py)."""
from __future__ import annotations

import numpy as np

from edgekit.runtime.generate import GenerationConfig, generate
from edgekit.runtime.session import positions
from edgekit.runtime.speculate import divergence_gap as tie_margin_at_divergence

WRONG = 3   # a token id that the checks put in a draft where the text has another


def rollback_worst(session, prompt: list[int], text: list[int], k: int = 4) -> float:
    """Largest |Δlogit| between one-token steps over `text` and wide forwards whose drafts are wrong at every draft
    position in turn (j correct tokens, then a wrong one, then the rest): after each forward only the j correct
    drafts are kept and the next forward writes over the rejected positions, as speculation does. A session that
    attended a rejected token's stale K/V (or refused to go back) differs here."""
    assert all(t != WRONG for t in text), "pick a text without the stand-in wrong token"
    session.reset()
    session.forward(np.asarray([prompt], dtype=np.int64), positions(0, len(prompt)))
    plain = [session.forward(np.asarray([[t]], dtype=np.int64), positions(len(prompt) + i, 1))[0, -1]
             for i, t in enumerate(text)]
    session.reset()
    session.forward(np.asarray([prompt], dtype=np.int64), positions(0, len(prompt)))
    i, worst, rejected_at = 0, 0.0, set()
    while i + k + 1 <= len(text):
        j = len(rejected_at) % k                     # 0, 1, ..., k-1 correct drafts, then a wrong one
        feed = [text[i]] + list(text[i + 1:i + 1 + j]) + [WRONG] + list(text[i + 2 + j:i + 1 + k])
        rows = session.forward(np.asarray([feed[:k + 1]], dtype=np.int64), positions(len(prompt) + i, k + 1))[0]
        worst = max(worst, float(np.abs(rows[:j + 1] - np.stack(plain[i:i + j + 1])).max()))
        rejected_at.add(j)
        i += j + 1
    assert rejected_at == set(range(k)), f"the text was too short to reject at every draft position: {rejected_at}"
    return worst


def greedy_both(session, prompt: list[int], max_new_tokens: int, draft_tokens: int | None = 4):
    """(plain result, speculative result) of greedy generation from `prompt`."""
    plain = generate(session, prompt, GenerationConfig(max_new_tokens=max_new_tokens, speculate="off"))
    spec = generate(session, prompt, GenerationConfig(max_new_tokens=max_new_tokens, speculate="ngram",
                                                      draft_tokens=draft_tokens))
    return plain, spec


def assert_plain_greedy(session, prompt: list[int], max_new_tokens: int, bound: float, drafts: bool = True) -> None:
    """Greedy output with speculation is plain greedy's, except where plain decoding's top two logits were within
    2 x `bound` (the width-dependent rounding the session was held to); `drafts`: verify forwards really ran."""
    plain, spec = greedy_both(session, prompt, max_new_tokens)
    margin = tie_margin_at_divergence(session, prompt, plain.token_ids, spec.token_ids)
    assert margin is None or margin < 2 * bound, (plain.token_ids, spec.token_ids, margin)
    if drafts:
        assert spec.speculation["verify_forwards"] > 0, spec.speculation


def repeating_prompt(vocab: int, n: int = 10, seed: int = 0) -> list[int]:
    """A random run of n tokens said twice (tokens above WRONG): the second half is all n-gram matches."""
    rng = np.random.default_rng(seed)
    run = [int(t) for t in rng.integers(WRONG + 1, vocab, size=n)]
    return run + run
