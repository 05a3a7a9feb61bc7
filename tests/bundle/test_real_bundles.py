"""SmolLM2-135M bundles for every installed target: layout, and the greedy answer of each host-runnable bundle (through
`edgekit run`, and the IoT sample app with no edgekit at all) equal to the eager reference graph's."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgekit.bundling import Bundle

PROMPT = "What is the capital of France?"
NEW_TOKENS = 10
SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "iot" / "chat.py"


def _eager_answer(smollm2, bundle: Bundle):
    """Greedy generation on the target's eager reference graph (quantized like the bundle), same settings."""
    import torch

    from edgekit.runtime import EagerSession, generate_text
    from edgekit.targets.base import TargetSpec

    m = bundle.manifest
    md = m["artifact"]["metadata"]
    spec = TargetSpec(quant=m["quant"], max_seq_len=m["max_seq_len"], kv_cache=m["kv_cache"],
                      last_logits_only=m["last_logits_only"], options=md.get("options", {}))
    with torch.no_grad():
        ref = bundle.target.reference(smollm2, spec)
        return generate_text(EagerSession(ref), smollm2.tokenizer, PROMPT, chat=True, stop_ids=bundle.stop_ids,
                             max_new_tokens=NEW_TOKENS, temperature=0)


def test_every_target_gets_a_complete_bundle(real_bundles, real_targets):
    assert sorted(real_bundles) == sorted(t.name for t in real_targets)
    for name, b in real_bundles.items():
        m = b.manifest
        assert Bundle.open(b.path).report.files_checked == len(m["files"])
        assert m["model"]["parameters"] > 100_000_000 and m["model"]["source_sha256"]
        assert m["target"]["runtime"] and m["target"]["platform"] in ("android", "ios", "linux")
        assert {"tokenizer.json", "chat_template.jinja", "tokenizer_config.json", "README.md"} <= set(m["files"])
        assert all(any(f == a or f.startswith(a + "/") for f in m["files"]) for a in m["artifact"]["files"])
        runner = b.target.standalone_session()
        assert (m["runner"] is not None) == (runner is not None), name
        readme = (b.path / "README.md").read_text()
        assert m["artifact"]["main"] in readme and "manifest.json" in readme


@pytest.mark.parametrize("target", ["onnx", "executorch", "coreml"])
def test_edgekit_run_gives_the_eager_greedy_answer(target, real_bundles, smollm2):
    if target not in real_bundles:
        pytest.skip(f"the {target} target is not installed")
    b = real_bundles[target]
    if not b.target.capabilities.host_runnable:
        pytest.skip(f"{target} bundles do not run on this host")
    from edgekit.cli import cli

    want = _eager_answer(smollm2, b)
    r = CliRunner().invoke(cli, ["run", str(b.path), "--chat", "-p", PROMPT, "--temperature", "0",
                                 "--max-new-tokens", str(NEW_TOKENS)])
    assert r.exit_code == 0, r.output
    shown = " ".join(r.output.split())
    assert want.text.strip() and " ".join(want.text.split()) in shown, (want.text, shown)
    assert f"{len(want.token_ids)} tokens" in shown


def test_iot_sample_needs_no_edgekit_and_matches_eager(real_bundles, smollm2):
    """samples/iot/chat.py in a fresh interpreter where edgekit, torch and jinja2 cannot be imported."""
    b = real_bundles.get("onnx")
    assert b is not None, "the onnx (iot) target is not installed"
    want = _eager_answer(smollm2, b)
    guard = ("import sys, runpy; [sys.modules.__setitem__(m, None) for m in ('edgekit', 'torch', 'jinja2')]; "
             "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", guard, str(SAMPLE), str(b.path), "--prompt", PROMPT, "--temperature",
                        "0", "--max-new-tokens", str(NEW_TOKENS), "--ids-json"],
                       check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    got = json.loads(lines[-1])["ids"]
    assert got == [t for t in want.token_ids if t not in b.stop_ids]
    assert " ".join(want.text.split()) in " ".join(" ".join(lines[:-1]).split())
