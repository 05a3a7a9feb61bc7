"""ExecuTorch's C++ log lines (`[cpuinfo_utils.cpp:71] …`, `[threadpool.cpp:66] …`) stay out of the user's terminal
under edgekit's CLI and go to a log file; -vv lets them through."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import edgekit_executorch
import pytest

NATIVE_MARKERS = ("[cpuinfo_utils.cpp", "[threadpool.cpp")
NATIVE_LINE = re.compile(r"^\[\w+\.cpp:\d+\]", re.MULTILINE)   # ExecuTorch's ET_LOG prefix: [file.cpp:line]
PLUGIN = str(Path(edgekit_executorch.__file__).resolve().parents[1])
OPEN = ("import sys, numpy as np; sys.path.insert(0, sys.argv[2]); "
        "from edgekit_executorch.standalone_session import open_session; "
        "s = open_session(sys.argv[1], threads=2); print(s.forward(np.array([[1, 2]]), np.arange(2)).shape)")
PROMPT, NEW_TOKENS = "The quick brown fox", 6


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


@pytest.fixture(scope="module")
def kernel_bundle(tiny_model, tmp_path_factory):
    """The demo's ExecuTorch options (edgekit's own kernels): such a .pte has no XNNPACK delegate to start the
    runtime's thread pool at load, so the pool, and its CPU-info lines, start at the first forward."""
    import edgekit

    return edgekit.bundle(tiny_model("llama"), target="android", quant="8da4w", max_seq_len=64,
                          out=tmp_path_factory.mktemp("quiet-dist"), validate=False, show_progress=False,
                          linear_kernel="edgekit")


def _edgekit_run(bundle_path: Path, *flags: str, env: dict) -> subprocess.CompletedProcess:
    """`edgekit [flags] run BUNDLE` in a child process, stdout and stderr pipes (as under `| cat` or in CI)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("EDGEKIT_QUIET_THIRD_PARTY", "EDGEKIT_NATIVE_LOG")}
    return subprocess.run([sys.executable, "-m", "edgekit", *flags, "run", str(bundle_path), "-p", PROMPT,
                           "--max-new-tokens", str(NEW_TOKENS), "--temperature", "0"],
                          capture_output=True, text=True, env={**clean, **env}, timeout=300, check=True)


@pytest.mark.slow
def test_edgekit_run_in_a_pipe_shows_no_native_lines(kernel_bundle, tmp_path):
    log = tmp_path / "cache" / "edgekit-native.log"
    r = _edgekit_run(kernel_bundle.path, env={"EDGEKIT_CACHE_DIR": str(tmp_path / "cache")})
    both = r.stdout + r.stderr
    assert not NATIVE_LINE.findall(both), both[-1500:]
    want = kernel_bundle.generate(PROMPT, max_new_tokens=NEW_TOKENS, temperature=0.0).text   # as `edgekit run` does
    assert want.strip() and want.strip() in r.stdout, (want, r.stdout)  # the generated text is still printed
    assert f"{NEW_TOKENS} tokens, stop:" in r.stdout
    assert "[cpuinfo_utils.cpp" in log.read_text()    # kept in the log file under the user's cache folder

    loud = _edgekit_run(kernel_bundle.path, "-vv", env={"EDGEKIT_CACHE_DIR": str(tmp_path / "cache-vv")})
    assert NATIVE_LINE.findall(loud.stderr), loud.stderr[-1500:]   # asked for everything: the runtime's lines too
    assert want.strip() in loud.stdout


def test_the_redirection_puts_the_fds_back_and_shows_a_failure(tmp_path, monkeypatch, capfd):
    from edgekit_executorch.standalone_session import quiet_native_output

    log = tmp_path / "native.log"
    monkeypatch.setenv("EDGEKIT_QUIET_THIRD_PARTY", "1")
    monkeypatch.setenv("EDGEKIT_NATIVE_LOG", str(log))
    with quiet_native_output():
        os.write(2, b"[a.cpp:1] on fd 2\n")
        with quiet_native_output():        # nested: still redirected, and the outer block restores
            os.write(1, b"[b.cpp:2] on fd 1\n")
        os.write(2, b"[c.cpp:3] after the inner block\n")
    with pytest.raises(RuntimeError, match="load failed"), quiet_native_output():
        os.write(2, b"[d.cpp:4] why it failed\n")
        raise RuntimeError("load failed")
    os.write(2, b"back on the terminal\n")
    monkeypatch.setenv("EDGEKIT_QUIET_THIRD_PARTY", "0")
    with quiet_native_output():
        os.write(2, b"[e.cpp:5] verbose: passed through\n")
    out, err = capfd.readouterr()
    assert not NATIVE_LINE.findall(out)
    assert NATIVE_LINE.findall(err) == ["[d.cpp:4]", "[e.cpp:5]"], err   # a failure's own lines, and -vv's
    assert "back on the terminal" in err
    assert NATIVE_LINE.findall(log.read_text()) == ["[a.cpp:1]", "[b.cpp:2]", "[c.cpp:3]", "[d.cpp:4]"]
