"""edgekit.bundle() / Bundle / the CLI over the fake target: layout, manifest, README, generation, several targets."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

import edgekit
from edgekit.bundling import SCHEMA_VERSION, Bundle, check_schema
from edgekit.bundling.readme import sample_code


def test_manifest_has_every_contract_key(fake_bundle):
    doc = json.loads((fake_bundle / "manifest.json").read_text())
    check_schema(doc)
    assert doc["schema_version"] == SCHEMA_VERSION == 2
    assert doc["target"] == {"name": "faketarget", "aliases": ["fake"], "platform": "linux",
                             "runtime": "fake-runtime", "runtime_version": "0.0", "min_runtime_version": None,
                             "min_os": "Linux (any)"}
    assert doc["model"]["family"] == "llama" and doc["model"]["parameters"] > 0
    assert doc["model"]["source"] == "llama"  # the checkpoint's name, not this machine's path
    assert doc["artifact"]["files"] == ["weights.safetensors", "config.json", "tokenizer.json", "chat_template.jinja",
                                        "tokenizer_config.json"]
    assert doc["artifact"]["main"] == "weights.safetensors"
    assert doc["quant"] == "fp32" and doc["kv_cache"] == "fp32" and doc["max_seq_len"] == 64
    assert doc["last_logits_only"] is True
    assert doc["io"]["inputs"] == {"tokens": "int64[1,T]", "input_pos": "int64[T]"}  # the target's own
    tok = doc["tokenizer"]
    assert tok["stop_ids"] and all(isinstance(i, int) for i in tok["stop_ids"])
    assert tok["chat_format"]["before"].startswith("<|im_start|>user\n")
    assert tok["chat_format"]["after"] == "<|im_end|>\n<|im_start|>assistant\n"
    assert doc["generation"]["temperature"] == 0.0 and doc["generation"]["max_new_tokens"] > 0
    assert doc["kernels"] == ["kernels/fake_kernel.cpp"]
    assert doc["runner"] == {"file": "fake_standalone.py", "entry": "open_session"}
    v = doc["validation"]
    assert v["tolerance"] == v["target_tolerance"] == 1e-4 and v["decode_steps"] == 8   # fp32: no noise margin
    for rel, entry in doc["files"].items():
        assert (fake_bundle / rel).stat().st_size == entry["bytes"]


def test_readme_carries_the_matching_samples_code(fake_bundle, tiny_llama, tmp_path):
    readme = (fake_bundle / "README.md").read_text()
    path, lang, code = sample_code("linux")
    assert path == "samples/iot/chat.py" and f"```{lang}\n{code}\n```" in readme
    assert "class BundleModel" in readme and "kernels/fake_kernel.cpp" in readme
    phone = edgekit.bundle(tiny_llama, target="fakephone", out=tmp_path, max_seq_len=64, validate=False)
    readme = (phone.path / "README.md").read_text()
    assert "LlmModule(" in readme and "```kotlin" in readme


def test_generate_matches_the_eager_graph(fake_bundle, tiny_llama):
    b = Bundle.open(fake_bundle)
    got = b.generate("The quick brown fox", max_new_tokens=12, temperature=0)
    want = tiny_llama.generate("The quick brown fox", max_new_tokens=12, temperature=0, max_seq_len=64)
    assert got.token_ids == want.token_ids and len(got.token_ids) > 0
    assert got.text == want.text


def test_sampling_options_reach_the_sampler(fake_bundle):
    b = Bundle.open(fake_bundle)
    sess = b.session()
    a = b.generate("def add", max_new_tokens=6, temperature=1.5, top_k=50, seed=7, session=sess)
    again = b.generate("def add", max_new_tokens=6, temperature=1.5, top_k=50, seed=7, session=sess)
    other = [b.generate("def add", max_new_tokens=6, temperature=1.5, top_k=50, seed=s, session=sess).token_ids
             for s in range(3)]
    greedy = b.generate("def add", max_new_tokens=6, temperature=0, session=sess).token_ids
    assert a.token_ids == again.token_ids
    assert any(ids != greedy for ids in other)


def test_a_zip_opens_to_the_same_bundle(fake_zip, cache_dir):
    b = Bundle.open(fake_zip)
    assert b.source == fake_zip and b.path.is_relative_to(cache_dir)
    assert b.report.files_checked == len(b.manifest["files"])
    assert Bundle.open(fake_zip).path == b.path  # unpacked once, verified on every open


def test_cli_run_streams_the_bundles_answer(fake_bundle, tiny_llama):
    from edgekit.cli import cli

    want = tiny_llama.generate("Let me think", max_new_tokens=8, temperature=0, max_seq_len=64)
    r = CliRunner().invoke(cli, ["run", str(fake_bundle), "--prompt", "Let me think", "--max-new-tokens", "8",
                                 "--temperature", "0"])
    assert r.exit_code == 0, r.output
    assert "8 tokens" in r.output or "stop: stop_token" in r.output
    assert re.sub(r"\s+", "", want.text.rstrip("\ufffd")) in re.sub(r"\s+", "", r.output)  # a torn UTF-8 tail is not streamed


def test_cli_run_shows_reasoning_apart(fake_bundle, monkeypatch):
    """A model answering '<think>…</think>…' gets its reasoning labelled, or hidden with --hide-reasoning."""
    from edgekit.cli import cli

    b = Bundle.open(fake_bundle)
    # the tags spelt as plain text pieces (the tiny tokenizer has them as special tokens, which decoding skips)
    script = [t for piece in ("<thin", "k>", "reasoning goes here", "</thin", "k>", " The final answer")
              for t in b.tokenizer.encode(piece)]
    vocab = b.manifest["model"]["vocab_size"]

    class Scripted:  # a session that "generates" the script, position by position
        max_seq_len, last_logits_only = 64, True

        def reset(self):
            self.step = 0

        def forward(self, tokens, input_pos):
            row = np.zeros((1, 1, vocab), np.float32)
            row[0, 0, script[self.step] if self.step < len(script) else b.stop_ids[0]] = 1
            self.step += 1
            return row

    monkeypatch.setattr(Bundle, "session", lambda self, **o: Scripted())
    shown = CliRunner().invoke(cli, ["run", str(fake_bundle), "-p", "hi", "--temperature", "0"])
    hidden = CliRunner().invoke(cli, ["run", str(fake_bundle), "-p", "hi", "--temperature", "0", "--hide-reasoning"])
    assert shown.exit_code == hidden.exit_code == 0, shown.output + hidden.output
    assert "thinking:" in shown.output and "reasoning goes here" in shown.output and "answer:" in shown.output
    assert "reasoning goes here" not in hidden.output and "The final answer" in hidden.output


def test_cli_verify(fake_bundle, fake_zip, cache_dir):
    from edgekit.cli import cli

    for path in (fake_bundle, fake_zip):
        r = CliRunner().invoke(cli, ["verify", str(path)])
        assert r.exit_code == 0, r.output
        out = " ".join(r.output.split())
        assert out.startswith("ok llama-faketarget-fp32") and "files" in out and "match their sha256 and size" in out


def test_several_targets_from_one_load(checkpoint_dir, tmp_path, monkeypatch):
    import importlib

    load_mod = importlib.import_module("edgekit.model.load")  # the module (edgekit.model.load is also a function)
    calls = []
    real_load = load_mod.load
    monkeypatch.setattr(load_mod, "load", lambda *a, **k: calls.append(a) or real_load(*a, **k))
    made = edgekit.bundle(checkpoint_dir("qwen3"), target=["fake", "fakephone"], out=tmp_path, max_seq_len=32,
                          zip=True)
    assert len(calls) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qwen3-fakephone-fp32.zip", "qwen3-faketarget-fp32.zip"]
    assert [b.manifest["target"]["platform"] for b in made] == ["linux", "android"]


def test_an_artifact_folder_bundles_without_the_model(tiny_llama, tmp_path):
    art = edgekit.export(tiny_llama, "fake", max_seq_len=48, last_logits_only=True, out=tmp_path / "art")
    from edgekit.errors import BundleError

    with pytest.raises(BundleError, match="max_seq_len cannot change an artifact that is already exported"):
        edgekit.bundle(art.path, out=tmp_path / "dist", max_seq_len=32)
    b = edgekit.bundle(art.path, out=tmp_path / "dist")  # the tokenizer the export wrote into the artifact
    assert b.manifest["max_seq_len"] == 48 and (art.path / "weights.safetensors").exists()  # copied, not moved
    assert b.generate("hello", max_new_tokens=6, temperature=0).token_ids == \
        tiny_llama.generate("hello", max_new_tokens=6, temperature=0, max_seq_len=48).token_ids


def test_an_artifact_bundles_after_its_checkpoint_is_gone(checkpoint_dir, tmp_path):
    import shutil

    ckpt = shutil.copytree(checkpoint_dir("qwen3"), tmp_path / "ckpt")
    model = edgekit.load(ckpt)
    art = edgekit.export(model, "fake", max_seq_len=32, out=tmp_path / "art")
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(art.files)
    assert set(art.files) <= set(art.metadata["file_hashes"])   # covered by the export's hashes like its weights
    shutil.rmtree(ckpt)
    b = edgekit.bundle(art.path, out=tmp_path / "dist")
    text = "The capital of France is Paris. 12 * 7 = 84."
    assert b.tokenizer.encode(text) == model.tokenizer.encode(text)
    assert b.tokenizer.chat_template == model.tokenizer.chat_template
    assert b.tokenizer.stop_ids == model.tokenizer.stop_ids


def test_bad_target_and_name_requests(tiny_llama, tmp_path):
    from edgekit.errors import BundleError, UnknownTarget

    with pytest.raises(UnknownTarget, match="unknown target 'tflite'"):
        edgekit.bundle(tiny_llama, target="tflite", out=tmp_path)
    with pytest.raises(BundleError, match="names one bundle but 2 targets"):
        edgekit.bundle(tiny_llama, target="fake,fakephone", name="x", out=tmp_path)
    assert not any(tmp_path.iterdir())
