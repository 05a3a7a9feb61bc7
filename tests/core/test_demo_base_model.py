"""The demo on a model without a chat template (a base model such as Gemma 3 270M) continues a plain prompt, and
leaves out the targets whose graph builder cannot compute the model, saying why."""
from __future__ import annotations

import edgekit
from edgekit.demo import BASE_PROMPT, PROMPT, TargetRun, _plan, demo_prompt


def test_a_model_without_chat_template_gets_a_plain_prompt(ckpt):
    model = edgekit.load(ckpt("gemma3"))
    model._tokenizer.chat_template = None
    assert demo_prompt(model) == (BASE_PROMPT, False)
    assert demo_prompt(edgekit.load(ckpt("qwen3"))) == (PROMPT, True)


def test_targets_that_cannot_compute_the_model_are_left_out_with_the_reason(ckpt, monkeypatch):
    """Every builder computes Gemma 3 now; one that lacked a feature (stood in for by ONNX with sliding_window taken
    out of its declared features) is left out naming it, not failed, and the others run."""
    from dataclasses import replace

    from edgekit.targets.registry import get_target

    onnx = get_target("onnx")
    lacking = tuple(f for f in onnx.capabilities.model_features if f != "sliding_window")
    monkeypatch.setattr(onnx, "capabilities", replace(onnx.capabilities, model_features=lacking))
    model = edgekit.load(ckpt("gemma3"))
    runs = [TargetRun(target=name) for name in ("executorch", "onnx", "coreml")]
    plan = _plan(runs, model=model)
    assert list(plan) == ["executorch", "coreml"]
    assert not runs[1].error and "sliding_window" in runs[1].left_out, runs[1].left_out
    assert not runs[0].left_out and not runs[2].left_out
