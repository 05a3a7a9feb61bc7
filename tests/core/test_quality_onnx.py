"""edgekit.evaluate() and the recorded figures on a real runtime (ONNX Runtime), with a tiny model: artifact and
bundle give the same figures, a last_logits_only artifact (fed one token at a time) the same as a full-logits one,
and the bundle manifest carries the export's figures."""
from __future__ import annotations

import json

import pytest

import edgekit
from edgekit.errors import EvaluationError
from edgekit.quality.evaluate import evaluate
from edgekit.targets.base import Artifact

SEQ = 32
BUDGET = 200   # scored tokens per evaluation here: a few windows


@pytest.fixture(scope="module")
def onnx_artifacts(tiny_model, tmp_path_factory):
    """int4 exports of the tiny llama, full logits and last_logits_only, and a bundle of the first."""
    pytest.importorskip("edgekit_onnx")
    root = tmp_path_factory.mktemp("quality-onnx")
    model = tiny_model("llama")
    full = edgekit.export(model, "onnx", quant="int4", max_seq_len=SEQ, out=root / "full", show_progress=False)
    last = edgekit.export(model, "onnx", quant="int4", max_seq_len=SEQ, last_logits_only=True, out=root / "last",
                          show_progress=False)
    bundle = edgekit.bundle(full, out=root / "dist", show_progress=False)
    return model, full, last, bundle


def test_export_records_figures_measured_in_onnxruntime(onnx_artifacts):
    _, full, last, _ = onnx_artifacts
    for art in (full, last):
        q = art.metadata["quality"]
        assert q["runtime"] == "onnxruntime" and q["target"] == "onnx" and q["quant"] == "int4"
        assert q["gate"]["passed"] is True and q["gate"]["scheme_class"] == "4-bit"
        assert 0 < q["mean_kl"] < 0.01 and 0 < q["relative_kl"] < q["gate"]["max_relative_kl"] and q["tokens"] > 100
    # the same windows either way: the one-token-at-a-time path computes the same figures
    a, b = full.metadata["quality"], last.metadata["quality"]
    assert a["tokens"] == b["tokens"]
    assert b["mean_kl"] == pytest.approx(a["mean_kl"], rel=1e-3, abs=1e-7)
    assert b["same_top"] == pytest.approx(a["same_top"], abs=0.02)


def test_bundle_manifest_carries_the_quality(onnx_artifacts):
    _, full, _, bundle = onnx_artifacts
    assert bundle.manifest["quality"] == json.loads(json.dumps(full.metadata["quality"]))


def test_bundle_and_artifact_evaluate_alike_against_the_recorded_checkpoint(onnx_artifacts):
    model, full, _, bundle = onnx_artifacts
    by_art = edgekit.evaluate(full, max_tokens=BUDGET, show_progress=False)  # reference: the recorded checkpoint
    by_bundle = evaluate(bundle.path, max_tokens=BUDGET, show_progress=False)
    by_model = evaluate(full.path, reference=model, max_tokens=BUDGET, show_progress=False)
    assert by_art.tokens == by_bundle.tokens == by_model.tokens > 0
    assert by_bundle.mean_kl == pytest.approx(by_art.mean_kl, rel=1e-5)
    assert by_model.mean_kl == pytest.approx(by_art.mean_kl, rel=1e-5)
    assert by_art.text_id == "edgekit-eval" and by_art.reference.startswith(model.name)


def test_own_text_as_file_or_string(onnx_artifacts, tmp_path):
    model, full, _, _ = onnx_artifacts
    text = "Step 1: 12 times 7 is 84. Step 2: 84 plus 16 is 100. The answer is 100. " * 6
    f = tmp_path / "mine.txt"
    f.write_text(text, encoding="utf-8")
    from_file = evaluate(full, reference=model, text=f, show_progress=False)
    from_str = evaluate(full, reference=model, text=text, show_progress=False)
    assert from_file.text_id == "mine.txt" and from_str.text_id == "text"
    assert from_file.text_sha256 == from_str.text_sha256 and from_file.mean_kl == from_str.mean_kl
    assert from_file.tokens == len(model.tokenizer.encode(text)) - (SEQ // 2 - 1)


def test_errors_name_the_value(onnx_artifacts, tmp_path):
    model, full, _, _ = onnx_artifacts
    with pytest.raises(EvaluationError, match=r"the text has \d+ tokens; one window .* needs at least 16"):
        evaluate(full, reference=model, text="too short", show_progress=False)
    with pytest.raises(EvaluationError, match="cannot read the evaluation text"):
        evaluate(full, reference=model, text=tmp_path / "missing.txt", show_progress=False)
    with pytest.raises(EvaluationError, match="neither an artifact folder"):
        evaluate(tmp_path, show_progress=False)
    moved = Artifact.load(full.path)
    moved.metadata["model"] = {**moved.metadata["model"], "source": str(tmp_path / "gone")}
    with pytest.raises(EvaluationError, match=r"--reference CHECKPOINT"):
        evaluate(moved, show_progress=False)
