"""Speculative decoding's parts (edgekit/runtime/speculate.py): the n-gram drafter, the cost model, and the loop's
exactness on a session whose logits are exact functions of the text (so any difference is the loop's)."""
from __future__ import annotations

import time

import numpy as np
import pytest
from speculation import greedy_both, repeating_prompt, rollback_worst

from edgekit.errors import UnsupportedOption
from edgekit.runtime.generate import GenerationConfig, generate
from edgekit.runtime.speculate import CostModel, NgramDrafter, decode


class MarkovSession:
    """Logits that depend on the last two tokens at each position (a fixed random table), computed from the tokens
    the session holds at those positions: a loop that fed the wrong positions, or kept a rejected token, gets other
    logits. `extra_seconds` makes each token of a forward beyond the first cost that much more (sleep)."""

    def __init__(self, vocab: int = 6, max_seq_len: int = 256, seed: int = 0, extra_seconds: float = 0.0,
                 sharp: float = 1.0, step_seconds: float = 0.0):
        self.vocab, self.max_seq_len, self.last_logits_only = vocab, max_seq_len, False
        self.table = np.random.default_rng(seed).normal(size=(vocab, vocab, vocab)).astype(np.float32) * sharp
        self.held = np.full(max_seq_len, -1, dtype=np.int64)
        self.length, self.extra_seconds, self.step_seconds, self.widths = 0, extra_seconds, step_seconds, []

    def reset(self) -> None:
        self.held[:], self.length = -1, 0

    def forward(self, tokens, input_pos):
        tokens, input_pos = np.asarray(tokens).reshape(-1), np.asarray(input_pos).reshape(-1)
        assert int(input_pos[0]) <= self.length, "a write position past the cached length"
        assert np.array_equal(input_pos, np.arange(input_pos[0], input_pos[0] + tokens.size))
        self.held[input_pos] = tokens
        self.length = int(input_pos[-1]) + 1
        self.widths.append(tokens.size)
        if self.step_seconds:
            time.sleep(self.step_seconds)
        if self.extra_seconds and tokens.size > 1:
            time.sleep(self.extra_seconds * (tokens.size - 1))
        prev = np.where(input_pos > 0, self.held[np.maximum(input_pos - 1, 0)], 0)
        return self.table[prev, tokens][None]


def test_drafter_proposes_what_followed_the_latest_longest_match():
    d = NgramDrafter()
    d.extend([1, 2, 3, 4, 9, 1, 2, 3, 5, 7, 1, 2, 3])
    assert d.draft(3) == ([5, 7, 1], 3)      # the latest "1 2 3" was followed by 5 7 ...
    assert d.draft(1) == ([5], 3)
    d.extend([8])                              # "2 3 8" never occurred, nor "3 8", nor "8"
    assert d.draft(4) == ([], 0)
    d.extend([1])
    assert d.draft(2) == ([2, 3], 1)           # only "1" matches (order 1)


def test_drafter_never_drafts_from_its_own_last_tokens():
    d = NgramDrafter()
    d.extend([4, 4])
    assert d.draft(3) == ([4], 1)              # the first 4 was followed by 4; the text ends there
    fresh = NgramDrafter()
    fresh.extend([4])
    assert fresh.draft(3) == ([], 0)


def test_cost_model_drafts_when_wide_forwards_are_cheap_and_not_when_they_are_dear():
    cheap, dear = CostModel(), CostModel()
    for width in range(1, 10):
        cheap.observe_forward(width, 0.010 + 0.001 * (width - 1))
        dear.observe_forward(width, 0.010 * width)
    for m in (cheap, dear):
        for _ in range(20):
            m.observe_draft(2, 4, 3)               # 3 of 4 drafted tokens kept, then a miss
    k, gain = cheap.best_draft(2, 8)
    assert k >= 3 and gain > 1.5
    assert dear.best_draft(2, 8) == (0, 1.0)   # E(k) <= k + 1 = cost(k + 1): never pays


def test_cost_model_without_measurements_tries_a_draft_then_believes_what_it_measured():
    m = CostModel()
    assert m.best_draft(3, 4)[0] > 0          # the prior lets a session try a wide forward once
    m.observe_forward(1, 0.01)
    m.observe_forward(5, 0.05)
    assert m.relative_cost(5) == pytest.approx(5.0)
    assert m.relative_cost(9) == pytest.approx(9.0)   # unmeasured widths extrapolate from the measured one
    assert m.best_draft(3, 8)[0] == 0


@pytest.mark.parametrize("draft_tokens", [None, 1, 3, 8])
def test_greedy_with_speculation_is_plain_greedy_on_exact_logits(draft_tokens):
    s = MarkovSession(sharp=3.0)
    prompt = repeating_prompt(s.vocab, n=8, seed=1)
    plain, spec = greedy_both(s, prompt, 120, draft_tokens=draft_tokens)
    assert spec.token_ids == plain.token_ids
    assert spec.stop_reason == plain.stop_reason == "max_new_tokens"
    info = spec.speculation
    assert info["verify_forwards"] > 0 and info["accepted"] > 0 and info["forwards"] < plain.speculation["forwards"]
    assert info["tokens_per_forward"] == pytest.approx(119 / info["forwards"], abs=1e-3)


def test_seeded_sampling_with_speculation_draws_the_same_tokens():
    """Each emitted token takes one draw from the generator, from the model's own distribution given the text before
    it, whether it was drafted or not: under one seed the tokens are those of plain sampling, token for token."""
    s = MarkovSession(seed=2)
    prompt = repeating_prompt(s.vocab, n=6, seed=3)
    for seed in range(5):
        cfg = {"max_new_tokens": 80, "temperature": 0.8, "top_k": 4, "top_p": 0.95, "seed": seed}
        plain = generate(s, prompt, GenerationConfig(**cfg, speculate="off"))
        spec = generate(s, prompt, GenerationConfig(**cfg, speculate="ngram", draft_tokens=4))
        assert spec.token_ids == plain.token_ids
        assert spec.speculation["accepted"] > 0


def test_sampling_with_speculation_keeps_the_distribution_without_a_shared_seed():
    """The distribution of the 6th token over 3000 runs with and without speculation (different seeds), against the
    exact distribution computed from the table: both within a chi-square bound (p ~ 0.001, 5 degrees of freedom)."""
    s = MarkovSession(vocab=6, seed=4)
    prompt = [1, 2, 1, 2, 1, 2]
    runs = 3000
    exact = np.zeros(s.vocab)
    # the exact law of token 6: propagate the chain's joint over (previous, current) five steps
    probs = lambda a, b: np.exp(s.table[a, b]) / np.exp(s.table[a, b]).sum()
    joint = {(prompt[-2], prompt[-1]): 1.0}
    for _ in range(6):
        nxt: dict = {}
        for (a, b), p in joint.items():
            for c, q in enumerate(probs(a, b)):
                nxt[b, c] = nxt.get((b, c), 0.0) + p * q
        joint = nxt
    for (_, c), p in joint.items():
        exact[c] += p
    for mode, base in (("off", 0), ("ngram", 10_000)):
        counts = np.zeros(s.vocab)
        for r in range(runs):
            res = generate(s, prompt, GenerationConfig(max_new_tokens=6, temperature=1.0, seed=base + r,
                                                       speculate=mode, draft_tokens=3 if mode == "ngram" else None))
            counts[res.token_ids[5]] += 1
        chi2 = float((((counts - runs * exact) ** 2) / (runs * exact)).sum())
        assert chi2 < 20.5, (mode, counts, runs * exact)


def test_rollback_on_the_exact_session_is_exact():
    s = MarkovSession()
    assert rollback_worst(s, [1, 2, 4], [int(t) for t in np.random.default_rng(0).integers(4, 6, size=40)]) == 0.0


def test_expensive_verification_turns_speculation_off():
    """Each drafted token costs more than a whole step (a step 1 ms, each extra token 3 ms): even drafts that are
    always right cannot pay, and after measuring a wide forward the loop drafts no more,
    though the drafts it declines keep scoring well."""
    s = MarkovSession(sharp=3.0, step_seconds=0.001, extra_seconds=0.003)
    prompt = repeating_prompt(s.vocab, n=8, seed=1)
    res = generate(s, prompt, GenerationConfig(max_new_tokens=60, speculate="ngram"))
    decode_widths = s.widths[1:]
    assert max(decode_widths) > 1                          # it tried
    last_wide = max(i for i, w in enumerate(decode_widths) if w > 1)
    assert last_wide < 10 and res.speculation["verify_forwards"] <= 3, decode_widths


def test_cheap_verification_keeps_speculating():
    """A 2 ms step that one more token makes 0.1 ms dearer (a bandwidth-bound decode): drafts pay and continue."""
    s = MarkovSession(sharp=3.0, step_seconds=0.002, extra_seconds=0.0001)
    prompt = repeating_prompt(s.vocab, n=8, seed=1)
    res = generate(s, prompt, GenerationConfig(max_new_tokens=60, speculate="ngram"))
    assert res.speculation["tokens_per_forward"] > 1.5, res.speculation


def test_last_logits_only_sessions_decode_plainly_and_say_why():
    s = MarkovSession(sharp=3.0)
    s.last_logits_only = True
    res = generate(s, repeating_prompt(s.vocab), GenerationConfig(max_new_tokens=20, speculate="ngram"))
    assert res.speculation["verify_forwards"] == 0 and "last position's logits" in res.speculation["reason"]
    assert set(s.widths[1:]) == {1}


def test_stop_tokens_and_length_limits_inside_an_accepted_draft():
    s = MarkovSession(sharp=3.0)
    prompt = repeating_prompt(s.vocab, n=8, seed=1)
    plain = generate(s, prompt, GenerationConfig(max_new_tokens=40, speculate="off"))
    stop = plain.token_ids[17]
    first = plain.token_ids.index(stop)
    for draft_tokens in (2, 5, 8):
        res = generate(s, prompt, GenerationConfig(max_new_tokens=40, stop_ids=(stop,), speculate="ngram",
                                                   draft_tokens=draft_tokens))
        assert res.token_ids == plain.token_ids[:first + 1] and res.stop_reason == "stop_token"
    short = MarkovSession(sharp=3.0, max_seq_len=len(prompt) + 13)
    ref = generate(short, prompt, GenerationConfig(max_new_tokens=40, speculate="off"))
    short.widths.clear()
    res = generate(short, prompt, GenerationConfig(max_new_tokens=40, speculate="ngram", draft_tokens=8))
    assert res.token_ids == ref.token_ids and res.stop_reason == ref.stop_reason == "max_seq_len"
    assert max(short.widths[1:]) > 1 and short.length <= short.max_seq_len   # drafted, never past the cache


def test_decode_counts_forwards_and_drafts():
    s = MarkovSession(sharp=3.0)
    out: list[int] = []

    def emit(t: int) -> str:
        out.append(t)
        return "max_new_tokens" if len(out) >= 30 else ""

    s.forward(np.asarray([[1, 2, 3, 1, 2, 3]]), np.arange(6))
    stats = decode(s, 1, 6, lambda row: int(np.argmax(row)), emit, room=lambda: 30 - len(out),
                   history=[1, 2, 3, 1, 2, 3], draft_tokens=4)
    assert stats.forwards == len(s.widths) - 1 and stats.drafted == sum(w - 1 for w in s.widths[1:])
    # every forward gives its kept drafts plus the model's own next token (the last one's may be cut by the limit)
    assert len(out) - 1 - stats.accepted in (stats.forwards, stats.forwards - 1)
    assert stats.accepted > 0 and stats.stop_reason == "max_new_tokens"


def test_bad_speculation_options_are_refused():
    with pytest.raises(UnsupportedOption, match="speculate='sometimes'; accepted: ngram, off"):
        GenerationConfig.from_options(speculate="sometimes")
    with pytest.raises(UnsupportedOption, match="draft_tokens=0; accepted: 1 to 8"):
        GenerationConfig.from_options(speculate="ngram", draft_tokens=0)
