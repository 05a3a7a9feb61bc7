"""Every installed target's declared capabilities are consistent: defaults among the schemes, the quality options
(what `edgekit demo` exports with) are accepted option names that pass the target's own spec checks."""
from __future__ import annotations

import pytest

from edgekit.targets.base import TargetSpec
from edgekit.targets.registry import targets


@pytest.mark.parametrize("target", targets(), ids=lambda t: t.name)
def test_quality_options_are_accepted(target, tiny_model):
    caps = target.capabilities
    assert caps.default_quant in caps.quant_schemes
    for name, _value in caps.quality_options:
        assert name in caps.options, f"{target.name}: quality option {name!r} is not among {caps.options}"
    spec = TargetSpec(quant=caps.default_quant, max_seq_len=32, options=dict(caps.quality_options))
    spec.check_against(target, tiny_model("qwen3"))


def test_onnx_keeps_a_small_models_output_layer_at_8_bits_and_blocks_at_32():
    from edgekit.targets.registry import get_target

    assert dict(get_target("iot").capabilities.quality_options) == {"output_bits": 8, "block_size": 32}
