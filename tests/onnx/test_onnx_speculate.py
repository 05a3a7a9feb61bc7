"""Speculation on ONNX Runtime sessions: GroupQueryAttention's shared buffer is written at seqlens_k, so a forward
that starts before the cached length writes over the rejected drafts; greedy with speculation is plain greedy."""
from __future__ import annotations

import numpy as np
import pytest
from speculation import assert_plain_greedy, repeating_prompt, rollback_worst

from edgekit.targets.registry import get_target

CASES = [("qwen2", "fp32", 1e-4), ("llama", "int4", 1e-3)]


@pytest.mark.parametrize(("case", "quant", "bound"), CASES)
def test_rollback_after_a_rejection_at_every_draft_position(onnx_export, model_for, case, quant, bound):
    session = get_target("onnx").session(onnx_export(case, quant))
    text = [int(t) for t in np.random.default_rng(2).integers(10, model_for(case).config.vocab_size, size=40)]
    assert rollback_worst(session, [5, 6, 7, 8], text, k=4) <= bound


@pytest.mark.parametrize(("case", "quant", "bound"), CASES)
def test_greedy_with_speculation_is_plain_greedy(onnx_export, model_for, case, quant, bound):
    session = get_target("onnx").session(onnx_export(case, quant))
    prompt = repeating_prompt(model_for(case).config.vocab_size, n=10)
    assert_plain_greedy(session, prompt, 30, bound)


@pytest.mark.parametrize(("case", "quant", "bound"), CASES)
def test_a_prompt_that_never_repeats_gives_plain_greedy_too(onnx_export, case, quant, bound):
    """No n-gram of the prompt recurs: drafts can only come from what the model itself repeats."""
    session = get_target("onnx").session(onnx_export(case, quant))
    prompt = list(range(20, 40))
    assert_plain_greedy(session, prompt, 30, bound, drafts=False)
