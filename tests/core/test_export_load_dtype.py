"""export() given a checkpoint PATH loads it in the dtype the target asks for (Capabilities.load_dtype), so a target
that computes in fp16 (Core ML) never holds an fp32 copy of the weights; an EdgeModel passed in is used as it is."""
from __future__ import annotations

import os
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


def bf16_copy(folder: Path, out: Path) -> Path:
    """The checkpoint at `folder` with its safetensors rewritten in bf16 (how most real checkpoints are stored)."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(folder, out)
    for f in out.glob("*.safetensors"):
        save_file({k: v.to(torch.bfloat16) for k, v in load_file(f).items()}, f, metadata={"format": "pt"})
    return out


@pytest.mark.parametrize("stored", [torch.float32, torch.bfloat16])
def test_stored_keeps_the_checkpoints_dtype(checkpoint_dir, tmp_path, monkeypatch, stored):
    folder = checkpoint_dir("qwen3")
    if stored == torch.bfloat16:
        folder = bf16_copy(folder, tmp_path / "bf16")
    target = DtypeRecorder("stored")
    monkeypatch.setattr(export_api, "get_target", lambda name: target)
    export_api.export(str(folder), "dtyperec", out=tmp_path / "a", validate=False, show_progress=False)
    assert target.seen == {stored}


def test_a_loaded_model_is_not_converted(tiny_model, tmp_path, monkeypatch):
    target = DtypeRecorder("float16")
    monkeypatch.setattr(export_api, "get_target", lambda name: target)
    export_api.export(tiny_model("qwen3"), "dtyperec", out=tmp_path / "b", validate=False, show_progress=False)
    assert target.seen == {torch.float32}


def test_default_is_fp32_coreml_asks_for_fp16_executorch_for_stored():
    from edgekit.targets.registry import get_target

    assert Capabilities(quant_schemes=("fp32",)).load_dtype == "float32"
    assert get_target("ios").capabilities.load_dtype == "float16"
    assert get_target("android").capabilities.load_dtype == "stored"   # quantizes a bf16 checkpoint chunk by chunk


def test_partials_of_killed_exports_are_swept_live_ones_kept(tiny_model, tmp_path, monkeypatch):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)
    stale = tmp_path / f".out.partial-{int(dead.stdout)}"   # that process has exited: a SIGKILLed export's leftover
    live = tmp_path / f".out.partial-{os.getppid()}"          # a running process: maybe a concurrent export
    for p in (stale, live):
        p.mkdir()
        (p / "model.bin").write_bytes(b"half")
    target = DtypeRecorder("float32")
    monkeypatch.setattr(export_api, "get_target", lambda name: target)
    export_api.export(tiny_model("qwen3"), "dtyperec", out=tmp_path / "out", validate=False, show_progress=False)
    assert not stale.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", live.name])
