"""Speculation on Core ML artifacts (through edgekit's MIL evaluator on Linux): the state's KV cache is written by
position and masked by position, so a forward before the cached length writes over rejected drafts."""
from __future__ import annotations

import numpy as np
from edgekit_coreml import CoreMLTarget
from speculation import assert_plain_greedy, repeating_prompt, rollback_worst

BOUND = 1e-3   # fp16 weights, fp32 compute in the evaluator: a row's sums do not depend on the forward's width


def test_rollback_after_a_rejection_at_every_draft_position(coreml_export, tiny_model):
    session = CoreMLTarget().session(coreml_export("qwen2", "fp16"), runtime="evaluator")
    text = [int(t) for t in np.random.default_rng(2).integers(10, tiny_model("qwen2").config.vocab_size, size=20)]
    assert rollback_worst(session, [5, 6, 7, 8], text, k=4) <= BOUND


def test_greedy_with_speculation_is_plain_greedy(coreml_export, tiny_model):
    session = CoreMLTarget().session(coreml_export("qwen2", "fp16"), runtime="evaluator")
    prompt = repeating_prompt(tiny_model("qwen2").config.vocab_size, n=6)
    assert_plain_greedy(session, prompt, 16, BOUND)


def test_a_prompt_that_never_repeats_gives_plain_greedy_too(coreml_export):
    session = CoreMLTarget().session(coreml_export("qwen2", "fp16"), runtime="evaluator")
    prompt = list(range(20, 32))
    assert_plain_greedy(session, prompt, 16, BOUND, drafts=False)
