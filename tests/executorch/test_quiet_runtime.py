"""ExecuTorch's C++ start-up log lines stay out of the user's terminal under edgekit's CLI, and go to a log file."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import edgekit_executorch

NATIVE_MARKERS = ("[cpuinfo_utils.cpp", "[threadpool.cpp")
PLUGIN = str(Path(edgekit_executorch.__file__).resolve().parents[1])
OPEN = ("import sys, numpy as np; sys.path.insert(0, sys.argv[2]); "
        "from edgekit_executorch.standalone_session import open_session; "
        "s = open_session(sys.argv[1], threads=2); print(s.forward(np.array([[1, 2]]), np.arange(2)).shape)")


def _open(folder: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", OPEN, str(folder), PLUGIN], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300, check=True)


def test_native_start_up_lines_go_to_the_log_file(exported, tmp_path):
    art = exported("llama", "8da4w")
    log = tmp_path / "native.log"
    quiet = _open(art.path, {"EDGEKIT_QUIET_THIRD_PARTY": "1", "EDGEKIT_NATIVE_LOG": str(log)})
    assert "(1, 2, " in quiet.stdout
    assert not [m for m in NATIVE_MARKERS if m in quiet.stderr], quiet.stderr[-500:]
    assert "[threadpool.cpp" in log.read_text()       # the lines are kept, not lost
    loud = _open(art.path, {"EDGEKIT_QUIET_THIRD_PARTY": "0"})
    assert "[threadpool.cpp" in loud.stderr            # without the setting, the runtime's own output is untouched
