"""`edgekit demo` in its reduced mode: every stage's output exists and validates."""
from __future__ import annotations

import json

import pytest

import edgekit


@pytest.mark.slow
def test_demo_quick_runs_every_stage(tmp_path):
    from edgekit.bundling import Bundle
    from edgekit.demo import demo_options, run_demo
    from edgekit.targets.registry import get_target

    def target_caps(name):
        return get_target(name).capabilities

    out = tmp_path / "demo out"  # a space in the path, as users have
    real = ["executorch", "coreml", "onnx"]  # every target edgekit ships (other tests may register test doubles)
    summary = run_demo("smollm2-135m", out, targets=real, prompt_lengths=(32,), decode_tokens=8, runs=1,
                       chat_tokens=12, max_seq_len=256)
    assert json.loads((out / "summary.json").read_text())["model"] == summary["model"]
    ran = {t["target"]: t for t in summary["targets"]}
    assert set(ran) == set(real) and set(real) <= {t.name for t in edgekit.targets()}
    for name, run in ran.items():
        assert not run["error"], f"{name}: {run['error']}"
        b = Bundle.open(run["bundle"])  # verifies every hash and field
        # quality + speed options (a compiler is here); under quant "source" the file fixes the quality ones
        assert run["options"] == demo_options(target_caps(name), quant=run["quant"]), name
        if dict(target_caps(name).speed_options).get("linear_kernel") == "edgekit":  # edgekit's kernels travel along
            libs = b.manifest["artifact"]["metadata"]["custom_op_libraries"]
            assert libs and all((b.path / lib).is_file() for lib in libs), name
        v = b.manifest["validation"]
        assert v.get("decode_steps", 0) > 0, name   # the bundle carries its export's validation figures
        stages = run["stage_seconds"]  # every artifact went through export's own validation stage, timed
        assert stages["export.validate"] > 0 and stages["export + validate + bundle"] >= stages["export.validate"], name
        assert run["answer"], f"{name} produced no answer"
        if run["profile"] is None:
            assert run["profile_skipped"], f"{name}: neither profiled nor a reason given"
        else:
            assert run["profile"]["decode_tokens_per_s"] > 0, name
    assert any(r["profile"] for r in ran.values()), "no bundle was profiled on this host"
    html = (out / "report.html").read_text()
    assert "<svg" in html and "<table" in html
    assert summary["eager_answer"]
    assert summary["stage_seconds"]["load"] > 0 and summary["stage_seconds"]["reference"] > 0
