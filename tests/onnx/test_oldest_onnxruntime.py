"""The oldest ONNX Runtime an export says it needs (metadata `min_onnxruntime`) really runs it: a venv with that
release (and the numpy 1.x it was built for) runs the self-contained session file on the export folder and gives the
logits and greedy tokens of this environment's ONNX Runtime. The default int4 export (MLAS, GatherBlockQuantized
embedding on uint8 data) says 1.22; with edgekit's kernel library (API 18, GatherQ4 for the embedding) it says 1.18.

Each venv is built once under the edgekit cache (a temp folder renamed into place, so an interrupted build leaves
nothing) and reused by later runs."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from edgekit.validate import probe_tokens

RELEASES = {"1.18": "1.18.1", "1.22": "1.22.1"}   # min_onnxruntime -> the last patch release of that minor
OLD_NUMPY = "1.26.4"   # onnxruntime 1.18 was built against numpy 1.x
SESSION_FILE = Path(__file__).resolve().parents[2] / "targets/onnx/edgekit_onnx/standalone_session.py"
STEPS = 6

# Runs in the old venv: prefill the prompt, decode greedily, print logits and tokens as one JSON line.
RUNNER = r"""
import importlib.util, json, sys
import numpy as np, onnxruntime as ort
spec = importlib.util.spec_from_file_location("standalone_session", sys.argv[1])
mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
sess = mod.open_session(sys.argv[2], threads=1)
prompt, steps = json.loads(sys.argv[3]), int(sys.argv[4])
logits = sess.forward(np.array([prompt]), np.arange(len(prompt)))[0, -1]
rows, tokens = [logits.tolist()], []
for i in range(steps):
    tokens.append(int(np.argmax(logits)))
    logits = sess.forward(np.array([[tokens[-1]]]), np.array([len(prompt) + i]))[0, -1]
    rows.append(logits.tolist())
print(json.dumps({"version": ort.__version__, "tokens": tokens, "logits": rows}))
"""


def _cache_root() -> Path:
    from edgekit.kernels.build import cache_root  # <edgekit cache>/kernels

    return cache_root().parent / "test-venvs"


def old_ort_python(version: str) -> Path:
    venv = _cache_root() / f"onnxruntime-{version}"
    python = venv / "bin" / "python"
    if (venv / ".ready").exists():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{venv.name}-", dir=venv.parent))
    try:
        subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, capture_output=True, timeout=300)
        pip = subprocess.run([str(tmp / "bin" / "python"), "-m", "pip", "install", "-q", "--no-input",
                              f"onnxruntime=={version}", f"numpy=={OLD_NUMPY}"],
                             capture_output=True, text=True, timeout=900, check=False)
        assert pip.returncode == 0, f"could not install onnxruntime {version} into a test venv:\n{pip.stderr[-3000:]}"
        (tmp / ".ready").write_text(f"onnxruntime=={version} numpy=={OLD_NUMPY}\n")
        shutil.rmtree(venv, ignore_errors=True)
        tmp.rename(venv)   # a venv's python finds its site-packages next to itself, so it survives the rename
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return python


def _run(python: Path, folder: Path, prompt: list[int]) -> dict:
    r = subprocess.run([str(python), "-c", RUNNER, str(SESSION_FILE), str(folder), json.dumps(prompt), str(STEPS)],
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, f"{python} failed on {folder}:\n{r.stderr[-3000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("kernel", "min_version", "tol"), [("mlas", "1.22", 2e-3), ("edgekit", "1.18", 1e-4)])
def test_oldest_supported_onnxruntime_runs_the_export(onnx_export, model_for, kernel, min_version, tol):
    """edgekit's kernels are the same code in both runtimes (tol 1e-4); MLAS's int4 GEMM may sum in another order
    across releases (tol 2e-3 on the tiny model's logits, which are O(0.1))."""
    art = onnx_export("qwen2", "int4", linear_kernel=kernel)
    assert art.metadata["min_onnxruntime"] == min_version
    version = RELEASES[min_version]
    prompt = probe_tokens(model_for("qwen2").config.vocab_size, 9, seed=11)
    old = _run(old_ort_python(version), art.path, prompt)
    new = _run(Path(sys.executable), art.path, prompt)
    assert old["version"] == version and new["version"] != version
    diff = float(np.abs(np.array(old["logits"]) - np.array(new["logits"])).max())
    assert diff <= tol, f"{kernel}: onnxruntime {version} vs {new['version']}: max |Δlogit| {diff} > {tol}"
    assert old["tokens"] == new["tokens"]
