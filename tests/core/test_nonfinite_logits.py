"""NaN/Inf logits stop generation with a NumericalError naming the step (before: an empty answer, exit code 0)."""
from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import edgekit
from edgekit.errors import NumericalError


@pytest.fixture
def overflowing(ckpt, tmp_path):
    """A checkpoint whose weights are all finite (so it loads) but whose logits overflow fp32: the final norm's
    weight near fp32's maximum times an lm_head scaled up 1000x gives +-Inf logits, and Inf - Inf gives NaN."""
    folder = shutil.copytree(ckpt("qwen2"), tmp_path / "overflow")
    path = folder / "model.safetensors"
    state = load_file(str(path))
    state["model.norm.weight"] = torch.full_like(state["model.norm.weight"], 3e38)
    state["lm_head.weight"] = state["lm_head.weight"] * 1000
    save_file(state, str(path), metadata={"format": "pt"})
    return folder


def test_non_finite_prefill_logits_stop_generation(overflowing):
    model = edgekit.load(overflowing)        # every weight is finite: the load check passes
    with pytest.raises(NumericalError) as e:
        model.generate("The quick brown", max_new_tokens=4)
    assert "non-finite logit(s)" in str(e.value) and "the prefill of" in str(e.value)


class NanAfter:
    """The real eager session, whose logits turn NaN from position `start` on (a runtime going wrong mid-answer)."""

    def __init__(self, session, start: int):
        self.inner, self.start = session, start
        self.max_seq_len, self.last_logits_only = session.max_seq_len, session.last_logits_only

    def reset(self) -> None:
        self.inner.reset()

    def forward(self, tokens, input_pos):
        out = self.inner.forward(tokens, input_pos)
        if int(input_pos[-1]) >= self.start:
            out = out.copy()
            out[..., 7] = np.nan
        return out


def test_non_finite_decode_logits_name_the_step(ckpt):
    from edgekit.runtime.generate import generate_text

    model = edgekit.load(ckpt("qwen2"))
    ids = model.tokenizer.encode("The quick brown", add_special_tokens=True)
    session = NanAfter(model.session(64), start=len(ids) + 2)
    with pytest.raises(NumericalError) as e:
        generate_text(session, model.tokenizer, "The quick brown", max_new_tokens=10, stop_ids=(-1,))
    assert f"decode step 3 (position {len(ids) + 2})" in str(e.value) and "1 non-finite logit(s)" in str(e.value)


def test_cli_generate_exits_2_on_non_finite_logits(overflowing, monkeypatch, capsys):
    from edgekit.cli import main

    monkeypatch.setattr(sys, "argv", ["edgekit", "generate", str(overflowing), "--prompt", "The quick brown",
                                      "--max-new-tokens", "4"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "NumericalError" in err and "non-finite logit" in err
