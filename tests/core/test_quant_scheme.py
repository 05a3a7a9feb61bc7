"""QuantScheme (typed, frozen, validated) and the registry of named schemes."""
from __future__ import annotations

import dataclasses
import json

import pytest

from edgekit.errors import EdgekitError, QuantSchemeError, UnknownQuantScheme
from edgekit.quant import QuantScheme, WeightGrid, get_scheme, register_scheme, scheme_names

W4 = WeightGrid(4, 32)
W8 = WeightGrid(8, None)


def test_unknown_name_names_it_and_the_known_ones():
    with pytest.raises(UnknownQuantScheme) as e:
        get_scheme("w3_g7")
    assert isinstance(e.value, EdgekitError)
    assert "'w3_g7'" in str(e.value)
    for name in scheme_names():
        assert name in str(e.value)


def test_builtin_names_resolve_to_their_meaning():
    assert {"fp32", "fp16", "w8", "w4", "w4_g32", "w4_g64", "w4_g128", "w4_g128_rtn", "w4m_g32", "8da4w",
            "source"} <= set(scheme_names())
    assert get_scheme("w4_g128_rtn").weights == WeightGrid(4, 128, symmetric=True, search=False)
    assert get_scheme("w4m_g32").weights == WeightGrid(4, 32, symmetric=False, search=True)
    assert get_scheme("8da4w").activations == "int8_token"
    assert get_scheme("fp32").weights == "float" and not get_scheme("fp32").quantizes_weights
    assert get_scheme("fp16").float_dtype == "fp16"
    assert get_scheme("source").keep_source
    scheme = get_scheme("w4_g64")
    assert get_scheme(scheme) is scheme


def test_resolve_order_pattern_then_explicit_then_source_then_weights():
    s = QuantScheme("t", W4, output=W8, overrides=(("layers.0.*", "float"), ("*.w2.weight", W8)), keep_source=True)
    assert s.resolve("layers.0.attention.wq.weight", has_source=True) == "float"   # pattern beats all
    assert s.resolve("layers.3.feed_forward.w2.weight", has_source=True) == W8
    assert s.resolve("output.weight", has_source=True) == W8                       # explicit beats keep_source
    assert s.resolve("tok_embeddings.weight", has_source=True) == "source"        # embedding unset: source kept
    assert s.resolve("tok_embeddings.weight", has_source=False) == W4             # ... else as the weights
    assert s.resolve("layers.3.attention.wq.weight", has_source=False) == W4
    assert QuantScheme("u", W4).resolve("layers.1.attention.wk.weight", has_source=True) == W4  # no keep_source


def test_schemes_are_frozen_and_serialisable():
    s = get_scheme("8da4w").with_overrides(name="8da4w_o8", output=W8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.activations = "float"
    d = json.loads(json.dumps(s.to_dict()))
    assert d["output"] == {"bits": 8, "group_size": None, "symmetric": True, "search": False}
    assert d["activations"] == "int8_token" and d["name"] == "8da4w_o8"
    assert get_scheme("8da4w").output is None  # the registered one is unchanged


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"weights": WeightGrid(4, 32), "activations": "int4"}, "activation mode 'int4'.*float, int8_token, int8_group"),
    ({"weights": "fp16"}, "weights grid 'fp16' is not valid"),
    ({"float_dtype": "bf16"}, "float dtype 'bf16'.*fp32, fp16"),
    ({"activation_group_size": 0}, "activation group size 0"),
    ({"overrides": (("", W4),)}, "override pattern ''"),
])
def test_bad_fields_are_errors_naming_value_and_accepted(kwargs, message):
    with pytest.raises(QuantSchemeError, match=message):
        QuantScheme("bad", **kwargs)


def test_bad_grids_and_group_sizes():
    with pytest.raises(QuantSchemeError, match="weight bits 1 .*2..8"):
        WeightGrid(1)
    with pytest.raises(QuantSchemeError, match="group size -4"):
        WeightGrid(4, -4)
    assert WeightGrid(8, None).group_for(576) == 576
    with pytest.raises(QuantSchemeError, match="group size 128 does not divide a row of 576"):
        WeightGrid(4, 128).group_for(576)


def test_registering_twice_needs_replace(monkeypatch):
    from edgekit.quant import registry

    monkeypatch.setattr(registry, "_SCHEMES", dict(registry._SCHEMES))  # the session's registry stays as built
    s = QuantScheme("test_only_w5", WeightGrid(5, 32))
    register_scheme(s, replace=True)
    with pytest.raises(QuantSchemeError, match="already registered"):
        register_scheme(s)
    assert get_scheme("test_only_w5") is s
