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


def test_targets_that_cannot_compute_the_model_are_left_out_with_the_reason(ckpt):
    model = edgekit.load(ckpt("gemma3"))
    runs = [TargetRun(target=name) for name in ("executorch", "onnx", "coreml")]
    plan = _plan(runs, model=model)
    assert list(plan) == ["executorch", "coreml"]   # Core ML's builder computes Gemma 3 too
    onnx = runs[1]
    assert not onnx.error and "sliding_window" in onnx.left_out, onnx.left_out
    assert not runs[2].left_out and not runs[2].error
