"""Fixtures for the profiler tests: real SmolLM2 bundles, a real OpenSSH server on 127.0.0.1, an isolated history.

The sshd is the system's /usr/sbin/sshd (Debian openssh-server) with keys, config and known_hosts in a temp folder;
the remote python is this venv's python, so the runner runs there with the real onnxruntime."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from helpers import free_port, kill_tree

SSHD = "/usr/sbin/sshd"
# Small settings keep the whole folder within its time budget; they exercise every code path all the same.
SMALL = {"prompt_lengths": (8, 24), "decode_tokens": 8, "runs": 2, "warmup": 1}


@pytest.fixture(autouse=True)
def isolated_profile_env(tmp_path, monkeypatch):
    """History in a temp cache dir; no user devices file; a private adb server port."""
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("EDGEKIT_DEVICES_FILE", str(tmp_path / "devices.toml"))


@pytest.fixture(scope="session")
def smollm2_bundles(request):
    """name -> bundle folder of the real SmolLM2-135M for the android (ExecuTorch, fp32) and iot (ONNX, int4 at accuracy level 1) targets:
    the session's shared bundles (tests/conftest.py's smollm2_bundle, also used by tests/bundle). Parity is the export
    tests' business, so they are not validated on export."""
    reuse = os.environ.get("EDGEKIT_PROFILE_TEST_BUNDLES")   # a folder with iot/ and android/ bundles made earlier
    if reuse:
        return {p.parent.parent.name: p.parent for p in Path(reuse).glob("*/*/manifest.json")}
    get = request.getfixturevalue("smollm2_bundle")
    return {target: Path(get(target).path) for target in ("iot", "android")}


@pytest.fixture(scope="session")
def local_reports(smollm2_bundles, tmp_path_factory):
    """Both real bundles profiled in this process (`--device local`), once per session, history in a temp dir."""
    from edgekit import profiling

    history = tmp_path_factory.mktemp("history") / "h.sqlite3"
    return {name: profiling.profile(path, "local", history=history, **SMALL)
            for name, path in smollm2_bundles.items()}


@dataclass
class Sshd:
    port: int
    folder: Path
    proc: subprocess.Popen
    options: dict = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"ssh://root@127.0.0.1:{self.port}"

    def host_key_line(self) -> str:
        return f"[127.0.0.1]:{self.port} " + (self.folder / "host_ed25519.pub").read_text().split(" #")[0].strip()

    def stop(self) -> None:
        kill_tree(self.proc.pid)
        self.proc.wait(timeout=10)


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def start_sshd(folder: Path) -> Sshd:
    if not Path(SSHD).exists():
        pytest.fail(f"{SSHD} is missing: apt-get install openssh-server (the profiler's ssh tests need it)")
    folder.mkdir(parents=True, exist_ok=True)
    _keygen(folder / "host_ed25519")
    _keygen(folder / "client_ed25519")
    shutil.copy(folder / "client_ed25519.pub", folder / "authorized_keys")
    port = free_port()
    (folder / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1\nHostKey {folder / 'host_ed25519'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPidFile {folder / 'sshd.pid'}\n"
        "PermitRootLogin prohibit-password\nStrictModes no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nSubsystem sftp internal-sftp\nLogLevel ERROR\n")
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege separation directory
    log = open(folder / "sshd.log", "wb")  # noqa: SIM115 - owned by the server process for its lifetime
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(folder / "sshd_config"), "-p", str(port)],
                            stdout=log, stderr=log)
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"sshd exited: {(folder / 'sshd.log').read_text()}")
            time.sleep(0.1)
    server = Sshd(port, folder, proc)
    (folder / "known_hosts").write_text(server.host_key_line() + "\n")
    workdir = folder / "remote-work"
    workdir.mkdir()
    server.options = {"identity_file": str(folder / "client_ed25519"), "known_hosts": str(folder / "known_hosts"),
                      "python": sys.executable, "workdir": str(workdir)}
    return server


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def own_sshd(tmp_path):
    """A private sshd for tests that kill it."""
    server = start_sshd(tmp_path / "sshd")
    yield server
    if server.proc.poll() is None:
        server.stop()


@pytest.fixture
def no_pwned(tmp_path):
    """Fails the test if a shell ran an injected `touch pwned` / `touch /tmp/pwned` from a path or file name."""
    places = [Path("/tmp/pwned"), Path.home() / "pwned", Path.cwd() / "pwned"]
    for p in places:
        if p.exists():
            p.unlink()
    yield places
    made = [str(p) for p in places if p.exists()] + [str(p) for p in tmp_path.rglob("pwned")]
    assert not made, f"a path or file name was executed by a shell: {made} created"


# A private adb server for these tests (never the user's on 5037), stopped when the session ends.
os.environ.setdefault("ANDROID_ADB_SERVER_PORT", str(free_port()))


@pytest.fixture(scope="session", autouse=True)
def stop_private_adb_server():
    yield
    if shutil.which("adb"):
        subprocess.run(["adb", "kill-server"], capture_output=True, timeout=30, check=False)
