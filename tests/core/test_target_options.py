"""Typed target options: declared once per target (type, accepted values, default, help), checked and converted
before any work, stored typed; the declared values agree with what each target's own planner accepts."""
from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

import edgekit
from edgekit.cli import cli
from edgekit.errors import UnsupportedOption
from edgekit.targets.options import Option, coerce, specs
from edgekit.targets.registry import targets

INSTALLED = {t.name: t for t in targets()}


def test_values_are_converted_to_the_declared_type():
    opt = Option("n", "int", (32, 64))
    assert opt.parse("32", "t") == 32 and opt.parse(64, "t") == 64
    assert Option("b", "bool").parse("TRUE", "t") is True and Option("b", "bool").parse("off", "t") is False
    with pytest.raises(UnsupportedOption, match=r"n 'abc' is not an integer; accepted: 32, 64 \(option of target 't'"):
        opt.parse("abc", "t")
    with pytest.raises(UnsupportedOption, match=r"n '48' is not supported; supported: 32, 64"):
        opt.parse("48", "t")
    for bad in (True, 32.5):
        with pytest.raises(UnsupportedOption):
            opt.parse(bad, "t")
    with pytest.raises(UnsupportedOption, match=r"b 'maybe' is not true or false"):
        Option("b", "bool").parse("maybe", "t")


@pytest.mark.parametrize("name", sorted(INSTALLED))
def test_every_option_is_typed_and_documented(name):
    table = specs(INSTALLED[name].capabilities)
    assert table, f"{name} declares no options"
    for opt in table.values():
        assert isinstance(opt, Option) and opt.help, f"{name}: option {opt.name} has no type or help"
        if opt.choices is not None and opt.default is not None:
            assert opt.default in opt.choices, f"{name}: {opt.name}'s default is not one of its choices"
    with pytest.raises(UnsupportedOption, match=rf"option\(s\) nope are not known to target {name!r}; known: "):
        coerce(name, INSTALLED[name].capabilities, {"nope": 1})


def _planners():
    """(target, option, planner(value)) for every option with declared choices that a planner reads."""
    out = []
    if "onnx" in INSTALLED:
        from edgekit_onnx.quant import plan_for

        for opt in ("block_size", "accuracy_level", "embedding_bits", "output_bits", "linear_kernel", "quantizer"):
            out.append(("onnx", opt, lambda o, v: plan_for("int4", {o: v})))
    if "executorch" in INSTALLED:
        from edgekit_executorch.quantize import plan

        for opt in ("group_size", "embedding_bits", "output_bits", "linear_kernel"):
            out.append(("executorch", opt, lambda o, v: plan("8da4w", {o: v})))
    if "coreml" in INSTALLED:
        from edgekit_coreml.quant import quant_for

        for opt in ("granularity", "block_size"):
            out.append(("coreml", opt, lambda o, v: quant_for("w4", {o: v})))
    return out


@pytest.mark.parametrize(("target", "option", "planner"), _planners(), ids=lambda x: x if isinstance(x, str) else "")
def test_declared_choices_are_what_the_target_plans_with(target, option, planner):
    """Every declared value plans; a value just outside the declaration is refused by the planner too."""
    opt = specs(INSTALLED[target].capabilities)[option]
    for value in opt.choices:
        planner(option, value)
    outside = 48 if opt.type == "int" else "bogus"
    with pytest.raises(UnsupportedOption):
        planner(option, outside)


def test_cli_strings_become_typed_options_in_the_metadata(tiny_model, tmp_path):
    pytest.importorskip("edgekit_onnx")
    art = edgekit.export(tiny_model("llama"), "iot", quant="int4", out=tmp_path / "a", validate=False,
                         evaluate=False, show_progress=False, block_size="32", quantizer_output="false")
    assert art.metadata["options"]["block_size"] == 32 and art.metadata["options"]["quantizer_output"] is False


def test_cli_bad_option_value_fails_before_any_work(tmp_path, ckpt):
    pytest.importorskip("edgekit_onnx")
    res = subprocess.run([sys.executable, "-m", "edgekit", "export", str(ckpt("llama")), "-t", "iot", "-O",
                          "block_size=abc", "-o", str(tmp_path / "a")], capture_output=True, text=True, timeout=300,
                         check=False)
    assert res.returncode == 2 and "block_size 'abc' is not an integer; accepted: 32, 64, 128" in res.stderr
    assert not (tmp_path / "a").exists()
    shown = CliRunner().invoke(cli, ["export", "--help-target", "iot"])
    assert shown.exit_code == 0 and "accuracy_level" in shown.output and "rtn, search, gptq" in shown.output
