"""The export gate: a self-consistent but broken export (its reference broken the same way, so parity validation
passes) fails on KL against the unquantized model and leaves nothing at `out`; a faithful one records its figures.

The fake target runs the eager graph over the weights it "exported" (a torch.save file), so the test needs no runtime
and isolates the gate from any target's own quantization."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgekit import export_api
from edgekit.errors import ParityError, QualityError
from edgekit.model.graph import build_decoder
from edgekit.runtime.session import EagerSession
from edgekit.targets.base import Artifact, Capabilities, TargetSpec

SEQ = 32


def _identity(name: str, w: torch.Tensor) -> torch.Tensor:
    return w


def _scramble_embedding(name: str, w: torch.Tensor) -> torch.Tensor:
    # a packing bug that permutes the vocabulary rows: every token looks up another token's vector
    if "embed" in name:
        return w[torch.randperm(w.shape[0], generator=torch.Generator().manual_seed(0))]
    return w


def _negate_mlp(name: str, w: torch.Tensor) -> torch.Tensor:
    # a sign error in the quantizer's dequantization of one kind of tensor
    return -w if "down" in name or "w2" in name else w


class EagerTarget:
    """Exports the model's weights after `corrupt` and runs them in the eager graph; reference() is the same graph,
    so validation sees a perfect artifact whatever `corrupt` does."""

    name, aliases, platform = "eagerfake", (), "linux"
    capabilities = Capabilities(quant_schemes=("fp32", "int4"))

    def __init__(self, corrupt=_identity):
        self.corrupt = corrupt
        self.config = None

    def _weights(self, model):
        return {k: self.corrupt(k, v.float()) for k, v in model.weights.items()}

    def export(self, model, spec: TargetSpec, out: Path) -> Artifact:
        self.config = model.config
        torch.save(self._weights(model), out / "weights.pt")
        return Artifact(path=out, target=self.name, files=["weights.pt"], metadata={})

    def reference(self, model, spec: TargetSpec):
        return build_decoder(model.config, self._weights(model), spec.max_seq_len, torch.float32,
                             spec.last_logits_only)

    def tolerance(self, spec: TargetSpec) -> float:
        return 1e-4

    def session(self, artifact: Artifact, **options):
        weights = torch.load(artifact.path / "weights.pt")
        return EagerSession(build_decoder(self.config, weights, artifact.metadata["max_seq_len"], torch.float32,
                                          artifact.metadata["last_logits_only"]))

    def device_assets(self, artifact):
        return []


def _export(model, target, out, **kw):
    return export_api.export(model, target.name, max_seq_len=SEQ, out=out, show_progress=False, **kw)


@pytest.fixture
def fake(monkeypatch):
    def install(corrupt=_identity):
        target = EagerTarget(corrupt)
        monkeypatch.setattr(export_api, "get_target", lambda name: target)
        return target
    return install


def test_faithful_export_records_its_figures(tiny_model, fake, tmp_path):
    fake()
    art = _export(tiny_model("llama"), EagerTarget(), tmp_path / "ok", last_logits_only=True)
    q = art.metadata["quality"]
    assert q["mean_kl"] < 1e-10 and q["same_top"] == 1.0 and q["gate"]["passed"]
    assert q["perplexity"] == pytest.approx(q["reference_perplexity"], rel=1e-5)
    assert q["text_id"] == "edgekit-eval" and q["tokens"] > 50 and q["windows"] <= 8 and q["window_tokens"] == SEQ
    assert len(q["worst"]) == 3 and all(w["text"] for w in q["worst"])
    assert "evaluate" in art.metadata["stage_seconds"]
    assert Artifact.load(tmp_path / "ok").metadata["quality"] == q   # saved in artifact.json


@pytest.mark.parametrize("corrupt", [_scramble_embedding, _negate_mlp], ids=["scrambled-embedding", "negated-mlp"])
@pytest.mark.parametrize("quant", ["fp32", "int4"])
def test_broken_export_fails_the_gate_and_leaves_nothing(tiny_model, fake, tmp_path, corrupt, quant):
    target = fake(corrupt)
    out = tmp_path / "out"
    with pytest.raises(QualityError, match=r"not faithful to the unquantized model on edgekit-eval") as e:
        _export(tiny_model("qwen3"), target, out, quant=quant)
    assert isinstance(e.value, ParityError)   # callers that handle parity failures handle this one
    assert sorted(p.name for p in tmp_path.iterdir()) == []   # no out, no .partial folder
    # and the same export without the gate goes through: validation alone cannot see it
    _export(tiny_model("qwen3"), target, out, quant=quant, evaluate=False)
    assert "quality" not in Artifact.load(out).metadata


def test_keep_failed_keeps_the_figures_with_the_failed_artifact(tiny_model, fake, tmp_path):
    target = fake(_scramble_embedding)
    with pytest.raises(QualityError):
        _export(tiny_model("llama"), target, tmp_path / "out", keep_failed=True)
    kept = Artifact.load(tmp_path / "out.failed")
    assert kept.metadata["quality"]["gate"]["passed"] is False
    assert kept.metadata["quality"]["relative_kl"] > kept.metadata["quality"]["gate"]["max_relative_kl"]
    assert not (tmp_path / "out").exists()


def test_validate_false_skips_evaluation_unless_asked(tiny_model, fake, tmp_path):
    fake()
    art = _export(tiny_model("llama"), EagerTarget(), tmp_path / "a", validate=False)
    assert "quality" not in art.metadata
    art = _export(tiny_model("llama"), EagerTarget(), tmp_path / "b", validate=False, evaluate=True)
    assert art.metadata["quality"]["gate"]["passed"]
