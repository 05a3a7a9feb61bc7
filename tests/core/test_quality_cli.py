"""`edgekit eval`: JSON for CI, a table for people, a missing reference named as --reference (exit 2); the HTML
profile report and the demo table show the recorded figures."""
from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

import edgekit
from edgekit.cli import cli

SEQ = 32


@pytest.fixture(scope="module")
def artifact(tiny_model, tmp_path_factory):
    pytest.importorskip("edgekit_onnx")
    out = tmp_path_factory.mktemp("quality-cli") / "art"
    return edgekit.export(tiny_model("qwen2"), "onnx", quant="fp32", max_seq_len=SEQ, out=out, show_progress=False)


def test_eval_json_for_ci(artifact):
    res = CliRunner().invoke(cli, ["eval", str(artifact.path), "--json", "--max-tokens", "100"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["mean_kl"] < 1e-6 and doc["same_top"] == 1.0 and doc["runtime"] == "onnxruntime"
    assert doc["text_id"] == "edgekit-eval" and 0 < doc["tokens"] <= 100 + SEQ and len(doc["worst"]) == 3


def test_eval_table_with_own_text(artifact, tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("First, 12 * 7 = 84. Then 84 + 16 = 100. The answer is 100. " * 5, encoding="utf-8")
    res = CliRunner().invoke(cli, ["eval", str(artifact.path), "--text", str(f)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    for word in ("mean KL per token", "same top token", "perplexity", "t.txt", "worst windows", "onnxruntime"):
        assert word in res.output


def test_missing_reference_names_the_option(artifact, tmp_path, monkeypatch, capsys):
    import shutil

    from edgekit.cli import main
    from edgekit.targets.base import Artifact

    moved = shutil.copytree(artifact.path, tmp_path / "moved")
    art = Artifact.load(moved)
    art.metadata["model"]["source"] = str(tmp_path / "deleted-checkpoint")
    art.save()
    monkeypatch.setattr(sys, "argv", ["edgekit", "eval", str(moved)])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "EvaluationError" in err and "--reference CHECKPOINT" in err
    res = CliRunner().invoke(cli, ["eval", str(moved), "--reference", str(artifact.metadata["model"]["source"]),
                                   "--json", "--max-tokens", "50"], catch_exceptions=False)
    assert res.exit_code == 0 and json.loads(res.output)["mean_kl"] < 1e-6


def test_html_report_and_demo_table_show_quality(artifact):
    from edgekit.demo import _quality_cells
    from edgekit.profiling.bundles import quality_summary
    from edgekit.profiling.html import quality_section

    q = quality_summary(artifact.metadata["quality"])
    report = SimpleNamespace(bundle={"quant": "fp32", "quality": q}, results={"decode_tokens_per_s": {"median": 42.0}})
    unmeasured = SimpleNamespace(bundle={"quant": "int4", "quality": None}, results={})
    html = quality_section([report, unmeasured], ["with", "without"])
    assert "Quality beside speed" in html and f"{q['mean_kl']:.4g}" in html and "100.0%" in html and "42.0" in html
    assert "not measured" in html
    kl, same, ppl = _quality_cells(artifact.metadata["quality"])
    assert float(kl) < 1e-6 and same == "100%" and "(" in ppl and _quality_cells({}) == ("-", "-", "-")
