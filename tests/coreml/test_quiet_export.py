"""`edgekit export -t ios` prints edgekit's lines only: coremltools' per-pipeline tqdm bars and torch's pytree
notices (raised by torchao's imports) stay out of the terminal unless -vv asks for the libraries' output."""
from __future__ import annotations

import os
import subprocess
import sys

CHATTER = ("Running MIL", "passes/s", "_pytree.py")
# the quiet switches the CLI sets for its own child processes; a CLI test run in this worker may have left them set
QUIET_ENV = ("TQDM_DISABLE", "PYTHONWARNINGS", "EDGEKIT_QUIET_THIRD_PARTY")


def _export(folder, out, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekit", *flags, "export", str(folder), "-t", "ios", "-o", str(out),
                           "--max-seq-len", "32", "--no-eval"], capture_output=True, text=True, timeout=600, check=False,
                          env={k: v for k, v in os.environ.items() if k not in QUIET_ENV})


def test_ios_export_prints_no_library_chatter_unless_asked(checkpoint_dir, tmp_path):
    quiet = _export(checkpoint_dir("qwen3"), tmp_path / "quiet")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "wrote" in quiet.stdout
    assert not [c for c in CHATTER if c in quiet.stderr], quiet.stderr[-2000:]
    loud = _export(checkpoint_dir("qwen3"), tmp_path / "loud", "-vv")
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert "Running MIL" in loud.stderr      # the bars are switched off, not broken: -vv brings them back
