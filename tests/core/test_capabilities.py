"""Every installed target's declared capabilities are consistent: defaults among the schemes, the quality options
and speed options (what `edgekit demo` exports with) are accepted option names that pass the target's own spec checks."""
from __future__ import annotations

import pytest

from edgekit.targets.base import TargetSpec
from edgekit.targets.options import names
from edgekit.targets.registry import targets


@pytest.mark.parametrize("target", targets(), ids=lambda t: t.name)
def test_quality_options_are_accepted(target, tiny_model):
    caps = target.capabilities
    assert caps.default_quant in caps.quant_schemes
    accepted = names(caps)
    for name, _value in caps.quality_options:
        assert name in accepted, f"{target.name}: quality option {name!r} is not among {accepted}"
    for name, _value in caps.speed_options:
        assert name in accepted, f"{target.name}: speed option {name!r} is not among {accepted}"
    spec = TargetSpec(quant=caps.default_quant, max_seq_len=32,
                      options={**dict(caps.quality_options), **dict(caps.speed_options)})
    spec.check_against(target, tiny_model("qwen3"))


def test_onnx_keeps_a_small_models_output_layer_at_8_bits_and_blocks_at_32():
    from edgekit.targets.registry import get_target

    assert dict(get_target("iot").capabilities.quality_options) == {"output_bits": 8, "block_size": 32}


def test_demo_exports_with_speed_options_unless_stock_kernels():
    from edgekit.demo import demo_options
    from edgekit.targets.registry import get_target

    for name in ("android", "iot"):
        caps = get_target(name).capabilities
        assert demo_options(caps)["linear_kernel"] == "edgekit", name
        assert "linear_kernel" not in demo_options(caps, stock_kernels=True), name
    assert demo_options(get_target("iot").capabilities, stock_kernels=True) == {"output_bits": 8, "block_size": 32}


def test_demo_falls_back_to_stock_kernels_without_a_compiler(tiny_model, tmp_path, monkeypatch):
    """No C++ compiler: the demo's IoT export is made with MLAS instead of failing, and says which options it used."""
    from edgekit.bundling import Bundle
    from edgekit.demo import _export_bundle, demo_options
    from edgekit.targets.registry import get_target

    monkeypatch.setenv("CXX", "")
    monkeypatch.setenv("PATH", str(tmp_path))  # no g++ / c++ / clang++ to be found
    options = demo_options(get_target("iot").capabilities)
    path, seconds, used = _export_bundle(tiny_model("qwen3"), "iot", tmp_path / "out", "int4", 32, True, options,
                                         show_progress=False)
    assert used == {"output_bits": 8, "block_size": 32} and seconds > 0
    meta = Bundle.open(path).manifest["artifact"]["metadata"]
    assert not meta.get("custom_op_libraries")
