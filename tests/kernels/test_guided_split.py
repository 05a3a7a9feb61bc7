"""The work split every edgekit kernel library runs on its runtime's pool (edgekit/kernels/csrc/guided_split.h), with
real threads: every index handed out exactly once, the guided chunk schedule, more or fewer workers than threads."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

CORE_CSRC = Path(__file__).resolve().parents[2] / "edgekit" / "kernels" / "csrc"


def test_guided_split_hands_out_every_index_once(tmp_path):
    exe = tmp_path / "guided_split_check"
    cmd = [shutil.which("g++") or "g++", "-std=c++17", "-O2", "-pthread", "-Wall", "-Werror", f"-I{CORE_CSRC}",
           str(CORE_CSRC / "guided_split_check.cpp"), "-o", str(exe)]
    built = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stderr[-3000:]
    res = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120, check=False)
    m = re.search(r"passed (\d+) of (\d+) cases", res.stdout)
    assert res.returncode == 0 and m and m.group(1) == m.group(2) and int(m.group(2)) >= 3000, res.stdout[-3000:]
    bad = subprocess.run([str(exe), "--drop"], capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 1 and "not handed out exactly once" in bad.stdout, "a lost index must fail the check"
