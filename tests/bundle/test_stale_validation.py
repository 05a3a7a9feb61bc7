"""Validation figures describe the files they were measured on: NaN logits fail validation, naming where, and a
bundle of an export folder changed after validation is refused, naming the file."""
from __future__ import annotations

import json

import pytest
import torch
from fake_target import FakeTarget
from safetensors.torch import load_file, save_file

import edgekit
from edgekit.errors import BundleError, ParityError

MAX_SEQ_LEN = 64


def test_nan_logits_fail_validation_naming_the_step(tiny_llama, tmp_path, monkeypatch):
    """The artifact's runtime computes NaN (its stored weights broke) while the reference is fine."""
    original = FakeTarget.export

    def export_nan(self, model, spec, out):
        art = original(self, model, spec, out)
        path = out / "weights.safetensors"
        state = load_file(str(path))
        state["norm.weight"] = torch.full_like(state["norm.weight"], float("nan"))
        save_file(state, str(path))
        return art

    monkeypatch.setattr(FakeTarget, "export", export_nan)
    out = tmp_path / "art"
    with pytest.raises(ParityError) as e:
        edgekit.export(tiny_llama, "fake", out=out, max_seq_len=MAX_SEQ_LEN, show_progress=False)
    msg = str(e.value)
    assert "the faketarget artifact (fp32) produced" in msg and "non-finite logit(s)" in msg
    assert "first at the prefill of" in msg
    assert not out.exists()


@pytest.fixture
def validated_export(tiny_llama, tmp_path):
    art = edgekit.export(tiny_llama, "fake", out=tmp_path / "art", max_seq_len=MAX_SEQ_LEN, show_progress=False)
    # the figures on disk are the ones the export returned (what bundling reads back later)
    assert json.loads((art.path / "artifact.json").read_text())["metadata"]["validation"] == art.metadata["validation"]
    return art.path


def test_an_unchanged_export_folder_bundles_with_its_figures(validated_export, tmp_path):
    meta = json.loads((validated_export / "artifact.json").read_text())["metadata"]
    # the weights, the config and the tokenizer the export wrote beside them
    assert set(meta["file_hashes"]) == {"weights.safetensors", "config.json", "tokenizer.json", "chat_template.jinja",
                                        "tokenizer_config.json"}
    b = edgekit.bundle(validated_export, out=tmp_path / "dist")
    assert b.manifest["validation"] == meta["validation"]


@pytest.mark.parametrize("change", ["flip", "truncate"])
def test_an_export_folder_changed_after_validation_is_refused(validated_export, tmp_path, change):
    weights = validated_export / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    if change == "flip":
        data[len(data) // 2] ^= 0x01          # same size: only the sha256 can tell
    else:
        data = data[:-16]
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError) as e:
        edgekit.bundle(validated_export, out=tmp_path / "dist")
    msg = str(e.value)
    assert str(weights) in msg and "changed after it was written and validated" in msg and "export again" in msg
    assert not (tmp_path / "dist").exists() or not any((tmp_path / "dist").iterdir())


def test_a_legacy_export_folder_bundles_without_figures(validated_export, tmp_path):
    path = validated_export / "artifact.json"
    doc = json.loads(path.read_text())
    doc["metadata"].pop("file_hashes")
    path.write_text(json.dumps(doc))
    b = edgekit.bundle(validated_export, out=tmp_path / "dist")
    assert b.manifest["validation"] == {} and "validation" not in b.manifest["artifact"]["metadata"]
