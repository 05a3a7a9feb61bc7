"""Draft-free speculative decoding: prompt-lookup drafts, verified in one wide forward, sized by a cost model.

Decode reads every weight once per step, so one step is bound by memory bandwidth; a forward of T tokens reads them
once too and costs little more than one step (measured per session, not assumed). When the last n tokens of the
text occurred before, the tokens that followed them then are a free guess of what follows now (the model restating
its input, a number, an earlier line). The guess is fed with the next token in one forward; every drafted token the
model itself would have chosen is kept, plus the model's own choice at the first mismatch, and the session's cache
is simply written over from the first rejected position on (every target's session accepts a write position at or
before its cached length; sliding-window rings keep config.RING_REWIND rows of slack for it).

This module imports only numpy and the standard library: the device runner (edgekit/profiling/runner.py) is pushed
to boards that have neither edgekit nor torch, and runs the same loop.
"""
from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MODES = ("ngram", "off")
# this file's name where it travels: beside the profiler's device runner and inside all-logits bundles
SHIPPED_AS = "edgekit_speculate.py"
SOURCE_FILE = __file__
MAX_DRAFT = 8          # the widest verify forward is MAX_DRAFT + 1 tokens
NGRAM_ORDERS = (4, 3, 2, 1)   # longest match first: a longer match predicts better
# A forward of T tokens relative to one token before anything is measured: optimistic enough that a session tries a
# wide forward once (then its own measurements decide), close to what XNNPACK and ONNX Runtime measure here.
PRIOR_SLOPE = 0.15
DECAY = 0.95


class NgramDrafter:
    """Prompt lookup over everything seen so far (prompt and generated tokens): for the longest n in NGRAM_ORDERS
    whose last n tokens occurred before, the tokens that followed their latest earlier occurrence. O(1) per token."""

    def __init__(self, orders: Sequence[int] = NGRAM_ORDERS):
        self.orders = tuple(sorted(orders, reverse=True))
        self.tokens: list[int] = []
        self._last: dict[tuple[int, ...], int] = {}   # n-gram -> index just past its latest occurrence
        self._pending: dict[tuple[int, ...], int] = {}

    def extend(self, tokens: Sequence[int]) -> None:
        for tok in tokens:
            # an n-gram ending at the current end is indexed only once a token follows it (its own occurrence
            # must not be its own draft)
            self._last.update(self._pending)
            self._pending.clear()
            self.tokens.append(int(tok))
            end = len(self.tokens)
            for n in self.orders:
                if end >= n:
                    self._pending[tuple(self.tokens[end - n:])] = end

    def draft(self, k: int) -> tuple[list[int], int]:
        """Up to k tokens and the order n of the match that proposed them ([], 0 when nothing matches)."""
        if k <= 0:
            return [], 0
        end = len(self.tokens)
        for n in self.orders:
            if end < n:
                continue
            at = self._last.get(tuple(self.tokens[end - n:]))
            if at is not None:
                return self.tokens[at:at + k], n
        return [], 0


@dataclass
class CostModel:
    """What a forward of T tokens costs relative to one token (EMA of measured seconds per width), and how often a
    draft from a match of order n is right (a per-token acceptance rate with a weak prior). k drafted tokens are
    worth E(k) = 1 + p + ... + p^k tokens per forward (each kept only if all before it were), so the best k
    maximises E(k) / cost(k + 1); k = 0 (plain decoding) whenever no k pays."""

    max_draft: int = MAX_DRAFT
    alpha: float = 0.25
    seconds: dict[int, float] = field(default_factory=dict)   # one-token step (and widths seen before it)
    ratios: dict[int, float] = field(default_factory=dict)    # width -> seconds / one-token step
    hits: dict[int, float] = field(default_factory=dict)
    misses: dict[int, float] = field(default_factory=dict)

    def observe_forward(self, width: int, seconds: float) -> None:
        """One forward's wall time. Wide forwards are kept as a ratio to the one-token step measured around them, so
        the machine's drift (tens of percent within minutes here) moves both alike. A shared machine preempts: a
        ratio sample is capped at 3x the width's estimate, and a width's first at `width` (a forward that reads the
        weights once is not dearer than that many steps), so one descheduled forward cannot turn speculation off
        for good."""
        if width == 1 or 1 not in self.seconds:
            old = self.seconds.get(width)
            self.seconds[width] = seconds if old is None else old + self.alpha * (seconds - old)
            return
        ratio, old = seconds / self.seconds[1], self.ratios.get(width)
        self.ratios[width] = min(ratio, float(width)) if old is None else old + self.alpha * (min(ratio, 3 * old) - old)

    def observe_draft(self, order: int, drafted: int, accepted: int) -> None:
        """`accepted` of `drafted` tokens kept: accepted successes, and one failure if the draft was cut short.
        Older drafts count less (DECAY per draft), so the rate follows the text: a reply that starts copying its
        input turns speculation on, one that stops copying turns it off."""
        self.hits[order] = self.hits.get(order, 0.0) * DECAY + accepted
        self.misses[order] = self.misses.get(order, 0.0) * DECAY + (1.0 if accepted < drafted else 0.0)

    def acceptance(self, order: int) -> float:
        """Laplace-smoothed: one success and one failure before anything is seen."""
        return (self.hits.get(order, 0.0) + 1.0) / (self.hits.get(order, 0.0) + self.misses.get(order, 0.0) + 2.0)

    def relative_cost(self, width: int) -> float:
        if width == 1:
            return 1.0
        if width in self.ratios:
            return max(self.ratios[width], 1e-3)
        if self.ratios:   # from the nearest measured width, each further token as dear as the measured ones on average
            near = min(self.ratios, key=lambda w: abs(w - width))
            return 1.0 + max(self.ratios[near] - 1.0, 0.0) * (width - 1) / (near - 1)
        return 1.0 + PRIOR_SLOPE * (width - 1)

    def best_draft(self, order: int, available: int) -> tuple[int, float]:
        """(k, expected speed-up over plain decoding) for a draft of up to `available` tokens from an order-n match."""
        p = self.acceptance(order)
        best_k, best = 0, 1.0
        for k in range(1, min(available, self.max_draft) + 1):
            expected = (1.0 - p ** (k + 1)) / (1.0 - p) if p < 1.0 else k + 1.0
            gain = expected / self.relative_cost(k + 1)
            if gain > best * 1.02:   # a 2 % margin: a wider forward is not bit-identical, do not widen for noise
                best_k, best = k, gain
        return best_k, best


@dataclass
class SpeculationStats:
    mode: str = "off"
    forwards: int = 0           # decode forwards (plain steps and verify forwards)
    drafted: int = 0
    accepted: int = 0
    verify_forwards: int = 0
    reason: str = ""            # why speculation is off, when it is
    stop_reason: str = ""

    def as_dict(self, tokens: int) -> dict[str, Any]:
        return {"mode": self.mode, "forwards": self.forwards, "drafted": self.drafted, "accepted": self.accepted,
                "verify_forwards": self.verify_forwards,
                "tokens_per_forward": round(tokens / self.forwards, 3) if self.forwards else None,
                "acceptance_rate": round(self.accepted / self.drafted, 3) if self.drafted else None,
                **({"reason": self.reason} if self.reason else {})}


_COSTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cost_model_for(session: Any) -> CostModel:
    """One cost model per session, kept across generate() calls: a chat's second turn starts from what the first
    measured (the forward costs are the session's own; acceptance keeps adapting)."""
    try:
        return _COSTS.setdefault(session, CostModel())
    except TypeError:   # a session that cannot be weakly referenced: measure afresh each call
        return CostModel()


def unavailable_reason(session: Any, mode: str) -> str:
    """'' when `mode` can run on this session, else why not (the loop then decodes one token per step)."""
    if mode not in MODES:
        raise ValueError(f"speculate={mode!r}; accepted: {', '.join(MODES)}")
    if mode == "off":
        return "off"
    if getattr(session, "last_logits_only", False):
        return ("the session returns only the last position's logits (an export with last_logits_only, or a bundle "
                "made without --all-logits)")
    return ""


Choose = Callable[[np.ndarray], int]
# records one token and says whether to go on: "" to continue, else the stop reason ("stop_token", "max_new_tokens")
Emit = Callable[[int], str]


def decode(session: Any, first: int, pos: int, choose: Choose, emit: Emit, room: Callable[[], int],
           history: Sequence[int], mode: str = "ngram", cost: CostModel | None = None,
           drafter: Any = None, check: Callable[[np.ndarray, str], None] | None = None,
           draft_tokens: int | None = None) -> SpeculationStats:
    """Decode from `first` (the token chosen from the prefill, not yet fed) at position `pos` until emit() says stop
    or the session is full; the stop reason is in the returned stats.

    choose(logits_row) -> token: greedy or sampled (a sampled draft is kept only when the model's own sample equals
    it, so every token is still drawn from the model's distribution given the text before it); room() -> how many
    more tokens may be emitted after the one just emitted; history: the prompt's ids, which drafts come from too;
    drafter: anything with extend(tokens) and draft(k) -> (tokens, order) (tests force rejections with one);
    draft_tokens: a fixed k instead of the cost model's choice.
    """
    stats = SpeculationStats(mode=mode)
    stats.reason = unavailable_reason(session, mode)
    speculating = not stats.reason
    if speculating:
        drafter = drafter if drafter is not None else NgramDrafter()
        drafter.extend(history)
        cost = cost if cost is not None else cost_model_for(session)
        limit = cost.max_draft if draft_tokens is None else int(draft_tokens)
    token = first
    while True:
        stats.stop_reason = emit(token)
        if stats.stop_reason == "stop_token":
            return stats
        if pos >= session.max_seq_len:
            stats.stop_reason = "max_seq_len"
        if stats.stop_reason:
            return stats
        proposal: list[int] = []
        draft: list[int] = []
        order = 0
        if speculating:
            drafter.extend([token])
            proposal, order = drafter.draft(min(room(), session.max_seq_len - 1 - pos, limit))
            if draft_tokens is not None:
                draft = proposal
            elif proposal:
                draft = proposal[:cost.best_draft(order, len(proposal))[0]]
        t0 = time.perf_counter()
        logits = session.forward(np.asarray([[token] + draft], dtype=np.int64),
                                 np.arange(pos, pos + 1 + len(draft), dtype=np.int64))
        if speculating:
            cost.observe_forward(1 + len(draft), time.perf_counter() - t0)
        stats.forwards += 1
        rows = logits[0]
        pos += 1
        accepted, token = 0, -1
        for i, guess in enumerate(draft):
            if check is not None:
                check(rows[i], f"decode step {stats.forwards}, verify row {i} (position {pos + i - 1})")
            chosen = choose(rows[i])
            if chosen != guess:
                token = chosen
                break
            accepted += 1
            drafter.extend([guess])
            stats.stop_reason = emit(guess)
            if stats.stop_reason:
                _count(stats, cost, order, len(draft), accepted)
                return stats
            pos += 1
        if token < 0:
            row = rows[len(draft)]
            if check is not None:
                check(row, f"decode step {stats.forwards} (position {pos - 1})")
            token = choose(row)
        if draft:
            _count(stats, cost, order, len(draft), accepted)
        elif proposal:
            # a draft the cost model declined, scored against the model's choice: acceptance stays measured while
            # speculation does not pay, so it comes back when it would
            cost.observe_draft(order, 1, int(token == proposal[0]))


def _count(stats: SpeculationStats, cost: CostModel, order: int, drafted: int, accepted: int) -> None:
    stats.verify_forwards += 1
    stats.drafted += drafted
    stats.accepted += accepted
    cost.observe_draft(order, drafted, accepted)


def divergence_gap(session: Any, prompt: Sequence[int], plain: Sequence[int], other: Sequence[int]) -> float | None:
    """None if two greedy outputs agree; else the top-two logit gap of plain decoding's logits where they part. A
    wide forward rounds differently from a one-token step in some runtimes, so greedy speculation may take the other
    side of a near-tie; this measures how near it was (a wrong rollback shows as a large gap)."""
    at = next((i for i, (a, b) in enumerate(zip(plain, other)) if a != b), None)
    if at is None:
        return None if len(plain) == len(other) else 0.0
    session.reset()
    ids = list(prompt) + list(plain[:at])
    row = np.asarray(session.forward(np.asarray([ids], dtype=np.int64), np.arange(len(ids), dtype=np.int64)))[0, -1]
    top = np.sort(row)[-2:]
    return float(top[1] - top[0])
