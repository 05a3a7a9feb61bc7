"""The quality figures' arithmetic, the window plan and the scheme bounds, without any runtime."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest

from edgekit.errors import ParityError, QualityError
from edgekit.evaldata import calibration_text, eval_text
from edgekit.quality.gate import BOUNDS, bound_for, check, scheme_class
from edgekit.quality.metrics import token_figures
from edgekit.quality.report import QualityReport
from edgekit.quality.windows import plan, reference_logits, window_logits


def test_kl_same_top_nll_match_their_definitions():
    ref = np.log(np.array([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]], dtype=np.float32))
    art = np.log(np.array([[0.5, 0.3, 0.2], [0.25, 0.5, 0.25]], dtype=np.float32)) + 3.0   # shift: same softmax
    f = token_figures(ref, art, np.array([1, -1]))
    p, q = np.exp(ref), np.exp(art - 3.0)
    expected = (p * np.log(p / q)).sum(-1)
    np.testing.assert_allclose(f.kl, expected, rtol=1e-5)
    assert f.same_top.tolist() == [True, False]
    assert f.nll_ref[0] == pytest.approx(-math.log(0.2), rel=1e-5) and np.isnan(f.nll_ref[1])
    assert f.nll_art[0] == pytest.approx(-math.log(0.3), rel=1e-5)
    np.testing.assert_allclose(f.ref_info, math.log(3) + (p * np.log(p)).sum(-1), rtol=1e-5)


def test_identical_logits_cost_nothing_and_uniform_knows_nothing():
    x = np.random.default_rng(0).normal(size=(5, 50)).astype(np.float32)
    f = token_figures(x, x.copy(), np.arange(5))
    assert f.kl.max() < 1e-12 and f.same_top.all()
    assert token_figures(np.zeros((2, 50)), np.zeros((2, 50)), np.arange(2)).ref_info.max() < 1e-12


@pytest.mark.parametrize("n, length", [(100, 16), (101, 16), (1000, 64), (9, 16), (40, 2)])
def test_windows_score_every_token_once_with_half_a_window_of_context(n, length):
    windows = plan(n, length)
    scored = [i for w in windows for i in w.scored]
    assert scored == list(range(length // 2 - 1, n))          # contiguous, each once, up to the last token
    for w in windows:
        assert w.length <= length and w.context == max(1, length // 2) and w.start + w.length <= n


def test_window_budget_spreads_over_the_whole_text():
    full = plan(5000, 64)
    some = plan(5000, 64, max_scored=330, max_windows=8)
    assert len(some) == 8                                             # 330 tokens would allow 10 windows of 33
    assert len(plan(5000, 64, max_scored=330)) == 10
    assert some[0].start == 0 and some[-1].start == full[-1].start   # first and last part of the text both seen
    assert plan(7, 16) == []                                          # shorter than one window's context


class _Full:
    """A fake session whose logits at position i are a function of the tokens up to i (so order matters)."""

    last_logits_only = False
    max_seq_len = 64

    def reset(self):
        self.seen = []

    def forward(self, tokens, input_pos):
        assert list(input_pos) == list(range(len(self.seen), len(self.seen) + tokens.shape[1]))
        rows = []
        for t in tokens[0]:
            self.seen.append(int(t))
            rows.append(np.bincount(np.asarray(self.seen) % 7, minlength=7).astype(np.float32) * (1 + len(self.seen)))
        out = np.stack(rows)[None]
        return out[:, -1:] if self.last_logits_only else out


class _Last(_Full):
    last_logits_only = True


def test_last_logits_only_sessions_give_the_same_rows_one_token_at_a_time():
    tokens = list(np.random.default_rng(1).integers(0, 100, 90))
    for w in plan(len(tokens), 20):
        full, last, ref = window_logits(_Full(), tokens, w), window_logits(_Last(), tokens, w), \
            reference_logits(_Full(), tokens, w)
        assert full.shape == (len(w.scored), 7)
        np.testing.assert_array_equal(full, last)
        np.testing.assert_array_equal(full, ref)


@pytest.mark.parametrize("scheme, kind", [("fp32", "float32"), ("fp16", "float16"), ("bf16", "float16"),
                                          ("w8", "8-bit"), ("int4", "4-bit"), ("8da4w", "4-bit"), ("w4", "4-bit"),
                                          ("w4g32", "4-bit"), ("q4_1", "4-bit"), ("int3", "below 4-bit"),
                                          ("q8_0", "8-bit"), ("mystery", "below 4-bit")])
def test_scheme_classes(scheme, kind):
    assert scheme_class(scheme) == kind
    assert bound_for(scheme) == BOUNDS[kind]


def test_bounds_tighten_with_more_bits():
    order = ["float32", "float16", "8-bit", "4-bit", "below 4-bit"]
    assert [BOUNDS[k].kl for k in order] == sorted(BOUNDS[k].kl for k in order)
    assert [BOUNDS[k].relative for k in order] == sorted(BOUNDS[k].relative for k in order)


def _report(kl: float, info: float) -> QualityReport:
    return QualityReport(mean_kl=kl, same_top=0.5, perplexity=10.0, reference_perplexity=9.0, tokens=100, windows=2,
                         window_tokens=64, runtime="rt", target="t", quant="int4", text_id="x", text_sha256="0" * 64,
                         reference="r", reference_information=info)


def test_gate_catches_a_near_uniform_model_by_its_relative_kl():
    # a tiny random model: KL far below every absolute bound, but most of what the reference knows is gone
    with pytest.raises(QualityError, match="relative KL") as e:
        check(_report(0.01, 0.013), "int4")
    assert isinstance(e.value, ParityError)
    assert check(_report(0.0003, 0.013), "int4")["passed"] is True


def test_gate_absolute_bound_names_the_figure():
    with pytest.raises(QualityError, match=r"mean KL 0\.5 > 0\.05"):
        check(_report(0.5, 100.0), "w8")
    r = _report(0.5, 100.0)
    check(r, "int4")
    assert r.gate["passed"] and r.to_dict()["gate"]["scheme_class"] == "4-bit"


def test_report_round_trips_through_json():
    import json

    r = _report(0.1, 2.0)
    back = QualityReport.from_dict(json.loads(json.dumps(r.to_dict())))
    assert back == r and back.relative_kl == pytest.approx(0.05)


def test_shipped_texts_are_separate_and_hashed():
    ev, cal = eval_text(), calibration_text()
    # the calibration text is 3,944 SmolLM2 tokens (15,721 characters): at least 3,000 tokens for GPTQ's Hessians
    assert len(ev.text) > 15000 and 13000 < len(cal.text) < 30000
    paragraphs = {p.strip() for p in ev.text.split("\n\n") if len(p.strip()) > 40}
    assert not any(p in cal.text for p in paragraphs)
    sentences = {s.strip() for s in re.split(r"(?<=[.?!])\s+", ev.text) if len(s.strip()) > 30}
    assert not [s for s in sentences if s in cal.text]
    assert ev.sha256 == eval_text().sha256 != cal.sha256 and len(ev.sha256) == 64


def test_calibration_text_is_at_least_3000_smollm2_tokens(smollm2):
    # GPTQ's per-layer Hessians come from it: 3,944 tokens (eight 512-token windows) since it was extended from 929
    assert len(smollm2.tokenizer.encode(calibration_text().text)) >= 3000
