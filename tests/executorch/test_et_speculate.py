"""Speculation on .pte sessions: a forward of k + 1 tokens at a position before the cached length writes over the
rejected drafts (ExecuTorch's custom_sdpa / edgekit's attention op mask by position), and greedy output with
speculation is plain greedy."""
from __future__ import annotations

import numpy as np
import pytest
from speculation import assert_plain_greedy, repeating_prompt, rollback_worst

from edgekit.targets.registry import get_target

# (case, quant, bound on |Δlogit| between a rolled-back wide forward and one-token steps): edgekit's kernels and
# XNNPACK compute each row alone, so the width changes nothing beyond float summation order
CASES = [("qwen2", "fp32", 1e-4), ("llama", "8da4w", 1e-3)]


def _session(art):
    return get_target("android").session(art)


@pytest.mark.parametrize(("case", "quant", "bound"), CASES)
def test_rollback_after_a_rejection_at_every_draft_position(exported, tiny_model, case, quant, bound):
    art = exported(case, quant)
    vocab = tiny_model(case).config.vocab_size
    text = [int(t) for t in np.random.default_rng(2).integers(10, vocab, size=40)]
    assert rollback_worst(_session(art), [5, 6, 7, 8], text, k=4) <= bound


def test_rollback_through_edgekits_own_attention(w8_variant, tiny_model):
    text = [int(t) for t in np.random.default_rng(3).integers(10, tiny_model("qwen2").config.vocab_size, size=40)]
    assert rollback_worst(_session(w8_variant), [5, 6, 7, 8], text, k=4) <= 1e-3


@pytest.mark.parametrize(("case", "quant", "bound"), CASES)
def test_greedy_with_speculation_is_plain_greedy(exported, tiny_model, case, quant, bound):
    session = _session(exported(case, quant))
    prompt = repeating_prompt(tiny_model(case).config.vocab_size, n=10)
    assert_plain_greedy(session, prompt, 30, bound)


@pytest.mark.parametrize(("case", "quant", "bound"), CASES)
def test_a_prompt_that_never_repeats_gives_plain_greedy_too(exported, case, quant, bound):
    """No n-gram of the prompt recurs: drafts can only come from what the model itself repeats."""
    session = _session(exported(case, quant))
    prompt = list(range(20, 40))
    assert_plain_greedy(session, prompt, 30, bound, drafts=False)
