"""The command line: info (table, --json, memory per dtype), targets, generate (tiny and SmolLM2), one-line errors."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

import edgekit
from edgekit.cli import cli


def run(*args: str):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def run_main(*args: str, cwd=None) -> subprocess.CompletedProcess:
    """The real entry point in a fresh process: exit codes and stderr as a user sees them."""
    return subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, timeout=300, check=False,
                          cwd=cwd)


def test_info_json_memory(ckpt):
    path = ckpt("llama")
    info = json.loads(run("info", str(path), "--json", "--context", "1024"))
    cfg = edgekit.load(path).config
    assert (info["family"], info["layers"], info["heads"], info["kv_heads"]) == ("llama", 2, 4, 2)
    assert info["parameters"] == cfg.num_parameters == sum(w.numel() for w in edgekit.load(path).weights.values())
    assert set(info["memory"]) == {"fp32", "fp16", "int8", "int4"}
    for dtype, row in info["memory"].items():
        assert row["weights"] == cfg.weight_bytes(dtype)
        assert row["kv_cache"] == cfg.kv_cache_bytes(1024, "int8" if dtype == "int4" else dtype)
        assert row["total"] == row["weights"] + row["kv_cache"]
    # fp32 KV cache: 2 (K,V) x layers x context x kv_heads x head_dim x 4 bytes
    assert info["memory"]["fp32"]["kv_cache"] == 2 * 2 * 1024 * 2 * 16 * 4
    assert info["tokenizer"].endswith("tokens") and info["chat_template"] == "yes"


def test_info_table(ckpt):
    out = run("info", str(ckpt("qwen3")), "--context", "4096")
    for word in ("qwen3", "memory (KV cache at 4096 tokens)", "fp32", "fp16", "int8", "int4", "tied_embeddings"):
        assert word in out


def test_info_smollm2(smollm2, monkeypatch):
    monkeypatch.setattr(sys.modules["edgekit.model.load"], "load", lambda name, *a, **k: smollm2)
    info = json.loads(run("info", "smollm2-135m", "--json"))
    assert (info["source_format"], info["source_quant"], info["layers"], info["vocab_size"]) == ("gguf", "Q4_1", 30,
                                                                                                 49152)
    assert 134_000_000 < info["parameters"] < 135_000_000 and info["stop_tokens"] == ["<|im_end|>"]


def test_targets_lists_installed_plugins():
    found = json.loads(run("targets", "--json"))
    assert [t["name"] for t in found] == [t.name for t in edgekit.targets()]
    for t in found:
        assert t["platform"] in ("android", "ios", "linux") and "quant_schemes" in t["capabilities"]
    run("targets")


@pytest.mark.parametrize("chat", [False, True])
def test_generate_tiny(ckpt, chat):
    args = ["generate", str(ckpt("qwen2")), "--prompt", "The quick brown", "--max-new-tokens", "6"]
    out = run(*args, *(["--chat"] if chat else []))
    assert "tokens, stop:" in out and "decode" in out


def test_generate_smollm2_chat(smollm2, monkeypatch):
    monkeypatch.setattr(sys.modules["edgekit.model.load"], "load", lambda name, *a, **k: smollm2)
    out = run("generate", "smollm2-135m", "--prompt", "What is the capital of France?", "--chat",
              "--max-new-tokens", "10")
    want = smollm2.generate("What is the capital of France?", chat=True, max_new_tokens=10)
    assert want.answer and want.answer in " ".join(out.split())
    assert "Paris" in want.answer  # greedy SmolLM2-135M-Instruct knows this one


def test_errors_exit_2_with_one_line(tmp_path):
    missing = run_main("info", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    lines = missing.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error (CheckpointError):") and "does not exist" in lines[0]


def in_process_main(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    from edgekit.cli import main

    monkeypatch.setattr(sys, "argv", ["edgekit", *args])
    capsys.readouterr()  # drop what fixtures printed
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def test_more_errors_exit_2(ckpt, tmp_path, monkeypatch, capsys):
    code, err = in_process_main(monkeypatch, capsys, "generate", str(ckpt("qwen2")), "--prompt", "x", "--top-p", "2")
    assert code == 2 and "UnsupportedOption" in err and "0 < top_p <= 1" in err and len(err.strip().splitlines()) == 1
    notok = shutil.copytree(ckpt("qwen2"), tmp_path / "notok")
    (notok / "tokenizer.json").unlink()
    code, err = in_process_main(monkeypatch, capsys, "generate", str(notok), "--prompt", "x")
    assert code == 2 and "TokenizerError" in err and "no tokenizer.json" in err
    code, err = in_process_main(monkeypatch, capsys, "info", str(notok))  # info still works without a tokenizer
    assert code == 0


def test_demo_stock_kernels_flag_reaches_run_demo(monkeypatch):
    import edgekit.demo

    seen = {}

    def fake_run_demo(model, out, targets, **kw):
        seen.update(kw, model=model, targets=targets)
        return {"targets": []}

    monkeypatch.setattr(edgekit.demo, "run_demo", fake_run_demo)
    run("demo", "--targets", "iot", "--quick", "--stock-kernels")
    assert seen["stock_kernels"] is True and seen["targets"] == ["iot"] and seen["decode_tokens"] == 16
    run("demo", "--targets", "iot")
    assert seen["stock_kernels"] is False
