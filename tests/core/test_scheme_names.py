"""Shared quant scheme names: one meaning per name on every target that accepts it, `--targets all --quant SCHEME`,
and the scheme with every override in the artifact's metadata and the bundle manifest."""
from __future__ import annotations

import json

import pytest

import edgekit
from edgekit.errors import UnsupportedOption
from edgekit.quant.registry import get_scheme, scheme_names
from edgekit.targets.registry import targets
from edgekit.targets.schemes import accepted, bind

INSTALLED = {t.name: t for t in targets()}


@pytest.mark.parametrize("name", sorted(INSTALLED))
def test_every_target_names_its_schemes_in_the_shared_vocabulary(name):
    """A target binds only registered names, onto quants of its own, and says for each shared name it lists how it
    holds it (the built-in targets bind every one explicitly; a plugin's listed name is held with no options)."""
    caps = INSTALLED[name].capabilities
    bound = {b.scheme for b in caps.scheme_bindings}
    assert bound <= set(scheme_names()), f"{name} binds unregistered names {bound - set(scheme_names())}"
    assert {b.quant for b in caps.scheme_bindings} <= set(caps.quant_schemes)
    unbound = {q for q in caps.quant_schemes if q in scheme_names()} - bound
    assert not unbound, f"{name} lists the shared scheme(s) {unbound} without saying how it holds them"
    assert caps.default_quant in accepted(caps) and len(set(accepted(caps))) == len(accepted(caps))


def test_a_plugin_listing_a_shared_name_holds_it_as_its_own_quant():
    from edgekit.targets.base import Capabilities

    caps = Capabilities(quant_schemes=("fp32", "myq"))
    assert accepted(caps) == ("fp32", "myq")
    b = bind("plugin", caps, "fp32", {"x": 1})
    assert (b.quant, b.options, b.record["scheme"]["name"], b.record["overrides"]) == ("fp32", {"x": 1}, "fp32", {})
    assert bind("plugin", caps, "myq", {}).record["scheme"] is None


def test_a_scheme_a_target_cannot_hold_names_what_it_can():
    tgt = INSTALLED.get("coreml") or pytest.skip("the coreml plugin is not installed")
    with pytest.raises(UnsupportedOption, match=r"'8da4w' is not supported by target 'coreml' \('8da4w' is a shared "
                                                r"scheme: int8 activations per token.*supported: fp16, w8, w4"):
        bind(tgt.name, tgt.capabilities, "8da4w", {})
    with pytest.raises(UnsupportedOption, match=r"'w5' is not supported.*supported: fp16"):
        bind(tgt.name, tgt.capabilities, "w5", {})


def test_options_the_user_changes_are_recorded_as_overrides():
    tgt = INSTALLED.get("onnx") or pytest.skip("the onnx plugin is not installed")
    b = bind(tgt.name, tgt.capabilities, "w4_g32", {"block_size": 64, "threads": 2})
    assert b.quant == "int4" and b.options["block_size"] == 64 and b.options["accuracy_level"] == 1
    assert b.record["overrides"] == {"block_size": 64}     # threads is no scheme option: not an override
    assert b.record["scheme"] == get_scheme("w4_g32").to_dict() and b.record["options"]["block_size"] == 32
    own = bind(tgt.name, tgt.capabilities, "int4", {})
    assert own.quant == "int4" and own.record["scheme"] is None


def test_targets_all_with_a_scheme_one_target_lacks_fails_before_any_export(tiny_model, tmp_path, monkeypatch):
    if len(INSTALLED) < 2:
        pytest.skip("needs two target plugins")
    from edgekit.bundling import build

    monkeypatch.setattr(build, "_export_and_bundle", lambda *a, **k: pytest.fail("an export started"))
    lacking = [n for n, t in INSTALLED.items() if "8da4w" not in accepted(t.capabilities)]
    with pytest.raises(UnsupportedOption) as e:
        edgekit.bundle(tiny_model("llama"), "all", out=tmp_path / "dist", quant="8da4w")
    for n in lacking:
        assert f"{n}: {', '.join(accepted(INSTALLED[n].capabilities))}" in str(e.value)
    assert not (tmp_path / "dist").exists()


def _onnx_attrs(path, op):
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in graph.node if n.op_type == op]


def test_onnx_holds_w4_g32_as_the_registry_defines_it(tiny_model, tmp_path):
    """w4_g32 on ONNX: 4-bit blocks of 32 with float activations (accuracy level 1) in every linear, the output layer
    included, and the manifest says so."""
    pytest.importorskip("edgekit_onnx")
    b = edgekit.bundle(tiny_model("llama"), "onnx", out=tmp_path, quant="w4_g32", show_progress=False)
    m = b.manifest
    assert m["name"].endswith("-onnx-w4_g32") and m["quant"] == "w4_g32"
    qs = m["quant_scheme"]
    assert qs["target_quant"] == "int4" and qs["scheme"]["weights"] == {"bits": 4, "group_size": 32,
                                                                        "symmetric": True, "search": True}
    assert qs["overrides"] == {} and m["artifact"]["metadata"]["quantizer"]["quantizer"] == "search"
    nbits = _onnx_attrs(b.path / m["artifact"]["main"], "MatMulNBits")
    cfg = tiny_model("llama").config
    assert len(nbits) == 4 * cfg.num_layers + 1     # q|k|v, o, gate|up, down per layer, and the output layer
    assert {(a["bits"], a["block_size"], a.get("accuracy_level", 0)) for a in nbits} == {(4, 32, 1)}
    on_disk = json.loads((b.path / "manifest.json").read_text())
    assert on_disk["quant_scheme"] == qs


def test_executorch_8da4w_is_groups_of_32(tiny_model, tmp_path):
    """8da4w means groups of 32 on ExecuTorch too (its old default was the largest group dividing every linear)."""
    pytest.importorskip("edgekit_executorch")
    model = tiny_model("llama")
    assert model.config.hidden_size % 64 == 0     # the old default would have picked 64 or more here
    art = edgekit.export(model, "android", out=tmp_path / "a", validate=False, evaluate=False, show_progress=False)
    q = art.metadata["quantization"]
    assert (art.metadata["quant"], q["group_size"], q["output_group_size"]) == ("8da4w", 32, 32)
    assert art.metadata["quant_scheme"]["name"] == "8da4w"


# ---- the model-feature contract: a builder that lacks a feature refuses the model instead of ignoring it ----------
def test_every_target_refuses_a_model_feature_its_builder_lacks(tiny_model, tmp_path, monkeypatch):
    from edgekit.model.config import ModelConfig

    model = tiny_model("qwen3")
    real = ModelConfig.features
    assert {"qk_norm", "tied_embeddings"} <= real(model.config)
    monkeypatch.setattr(ModelConfig, "features", lambda self: real(self) | {"sliding_window_attention"})
    for name in INSTALLED:
        with pytest.raises(UnsupportedOption, match=rf"needs sliding_window_attention, which target {name!r} does "
                                                    r"not implement \(it implements: .*qk_norm"):
            edgekit.export(model, name, out=tmp_path / name, show_progress=False)
        assert not (tmp_path / name).exists()


@pytest.mark.parametrize("case", ["llama", "qwen2", "qwen3"])
def test_the_tiny_models_features_are_all_implemented_everywhere(tiny_model, case):
    from edgekit.targets.base import check_features

    model = tiny_model(case)
    assert model.config.features(), f"{case} needs no feature: the contract would not be exercised"
    for t in INSTALLED.values():
        assert t.capabilities.model_features is not None, f"{t.name} does not declare its model features"
        check_features(t, model)
