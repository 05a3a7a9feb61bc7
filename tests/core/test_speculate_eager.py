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


class GreedyDrafter:
    """Drafts what the model itself would choose greedily (a draft model that is the model): under sampling most
    drafts are kept, which the n-gram drafter cannot promise on a random tiny model."""

    def __init__(self, model):
        self.session, self.tokens = model.session(64, last_logits_only=False), []

    def extend(self, tokens):
        self.tokens += [int(t) for t in tokens]

    def draft(self, k):
        import numpy as np

        ids, out = list(self.tokens), []
        for _ in range(k):
            self.session.reset()
            out.append(int(np.argmax(self.session.forward(np.asarray([ids]), np.arange(len(ids)))[0, -1])))
            ids.append(out[-1])
        return out, 1


def test_sampling_with_speculation_keeps_a_tiny_models_distribution(ckpt):
    """A real (tiny, random) model sampled at top-k 4: the 4th token over 1,000 runs with drafts verified several
    per forward, against the exact law computed from the model's own logits along each run's first three tokens
    (chi-square, 3 degrees of freedom, p ~ 0.001)."""
    import numpy as np

    from edgekit.runtime.generate import GenerationConfig, generate

    model = edgekit.load(ckpt("qwen2"))
    session = model.session(64, last_logits_only=False)
    prompt = repeating_prompt(model.config.vocab_size, n=6, seed=3)
    runs, kept, counts, expected = 1000, 0, {}, {}
    for r in range(runs):
        res = generate(session, prompt, GenerationConfig(max_new_tokens=4, temperature=1.0, top_k=4, seed=r,
                                                         speculate="ngram", draft_tokens=3),
                       drafter=GreedyDrafter(model))
        kept += res.speculation["accepted"]
        counts[res.token_ids[3]] = counts.get(res.token_ids[3], 0) + 1
        session.reset()   # the exact law of token 4 given the first three, from one plain forward
        ids = prompt + res.token_ids[:3]
        row = session.forward(np.asarray([ids]), np.arange(len(ids)))[0, -1].astype(np.float64)
        top = np.argsort(row)[-4:]
        p = np.exp(row[top] - row[top].max())
        for tok, q in zip(top, p / p.sum()):
            expected[int(tok)] = expected.get(int(tok), 0.0) + q
    assert kept > runs // 2, kept    # drafts really were kept
    cells = sorted(expected, key=expected.get, reverse=True)
    big = [t for t in cells if expected[t] >= 20]
    obs = [counts.get(t, 0) for t in big] + [runs - sum(counts.get(t, 0) for t in big)]
    exp = [expected[t] for t in big] + [runs - sum(expected[t] for t in big)]
    chi2 = sum((o - e) ** 2 / e for o, e in zip(obs, exp) if e > 0)
    assert chi2 < 16.3 + 2 * max(len(big) - 3, 0), list(zip(obs, exp))   # ~p 0.001 at len(big) dof
