"""export() given a checkpoint PATH loads it in the dtype the target asks for (Capabilities.load_dtype), so a target
that computes in fp16 (Core ML) never holds an fp32 copy of the weights; an EdgeModel passed in is used as it is."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edgekit import export_api
from edgekit.targets.base import Artifact, Capabilities, TargetSpec


class DtypeRecorder:
    name, aliases, platform = "dtyperec", (), "linux"

    def __init__(self, load_dtype: str) -> None:
        self.capabilities = Capabilities(quant_schemes=("fp32",), load_dtype=load_dtype)
        self.seen: set[torch.dtype] = set()

    def export(self, model, spec: TargetSpec, out: Path) -> Artifact:
        self.seen = {w.dtype for w in model.weights.values()}
        (out / "x.bin").write_bytes(b"x")
        return Artifact(path=out, target=self.name, files=["x.bin"], metadata={})


@pytest.mark.parametrize("load_dtype, expected", [("float16", torch.float16), ("float32", torch.float32)])
def test_path_is_loaded_in_the_targets_dtype(checkpoint_dir, tmp_path, monkeypatch, load_dtype, expected):
    target = DtypeRecorder(load_dtype)
    monkeypatch.setattr(export_api, "get_target", lambda name: target)
    export_api.export(str(checkpoint_dir("qwen3")), "dtyperec", out=tmp_path / "a", validate=False,
                      show_progress=False)
    assert target.seen == {expected}


def test_a_loaded_model_is_not_converted(tiny_model, tmp_path, monkeypatch):
    target = DtypeRecorder("float16")
    monkeypatch.setattr(export_api, "get_target", lambda name: target)
    export_api.export(tiny_model("qwen3"), "dtyperec", out=tmp_path / "b", validate=False, show_progress=False)
    assert target.seen == {torch.float32}


def test_default_is_fp32_and_coreml_asks_for_fp16():
    from edgekit.targets.registry import get_target

    assert Capabilities(quant_schemes=("fp32",)).load_dtype == "float32"
    assert get_target("ios").capabilities.load_dtype == "float16"
    assert get_target("android").capabilities.load_dtype == "float32"
