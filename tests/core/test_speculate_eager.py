"""Speculation on the eager graph (the reference every target is held to): rollback after a rejection at every
draft position is exact, on full caches and on Gemma 3's sliding-window rings, and greedy output equals plain."""
from __future__ import annotations

import numpy as np
import pytest
from speculation import greedy_both, repeating_prompt, rollback_worst, tie_margin_at_divergence

import edgekit

CASES = ["qwen2", "llama", "gemma3"]   # gemma3: window 6, so drafts are verified across the ring's wrap


@pytest.mark.parametrize("case", CASES)
def test_rollback_after_a_rejection_at_every_draft_position_is_exact(ckpt, case):
    model = edgekit.load(ckpt(case))
    session = model.session(64, last_logits_only=False)
    text = [int(t) for t in np.random.default_rng(1).integers(10, model.config.vocab_size, size=40)]
    assert rollback_worst(session, [5, 6, 7, 8], text, k=4) <= 1e-5


@pytest.mark.parametrize("case", CASES)
def test_greedy_with_speculation_is_plain_greedy(ckpt, case):
    model = edgekit.load(ckpt(case))
    session = model.session(64, last_logits_only=False)
    for seed in (0, 1):
        prompt = repeating_prompt(model.config.vocab_size, n=10, seed=seed)
        plain, spec = greedy_both(session, prompt, 40)
        margin = tie_margin_at_divergence(session, prompt, plain.token_ids, spec.token_ids)
        # fp32 eager: a wide forward rounds differently from a step by ~1e-6, so only a tie that close may differ
        assert margin is None or margin < 1e-4, (plain.token_ids, spec.token_ids, margin)
        assert spec.speculation["verify_forwards"] > 0


def test_a_prompt_that_never_repeats_gives_plain_greedy_too(ckpt):
    """No n-gram of the prompt recurs: drafts can only come from what the model itself repeats."""
    model = edgekit.load(ckpt("qwen2"))
    session = model.session(64, last_logits_only=False)
    prompt = list(range(20, 40))
    plain, spec = greedy_both(session, prompt, 30)
    margin = tie_margin_at_divergence(session, prompt, plain.token_ids, spec.token_ids)
    assert margin is None or margin < 1e-4
