"""Linux boards over SSH, through the system `ssh` / `scp` binaries (argument lists, never a local shell).

Host keys are checked against known_hosts (StrictHostKeyChecking=yes); accepting a new key is the explicit option
`accept_new_host_key` (StrictHostKeyChecking=accept-new), a changed key is always refused. Authentication is by key or
agent only (BatchMode=yes: never a password prompt). Commands run by the remote user's shell, so every argument is
quoted with shlex.quote.
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edgekit.errors import DeviceError
from edgekit.profiling.devices.base import FACTS_SCRIPT, RUNTIME_PROBE, CommandResult, Device, parse_facts, run_process

SSH_CONNECTION_ERROR = 255
_GLOB = re.compile(r"[*?\[\]{}~`$\\]")


def parse_ssh_uri(uri: str) -> tuple[str | None, str, int | None]:
    parts = urlsplit(uri)
    if parts.scheme != "ssh" or not parts.hostname:
        raise DeviceError(f"not an ssh device URI: {uri!r}; expected ssh://user@host[:port]")
    if parts.hostname.startswith("-"):
        raise DeviceError(f"bad ssh host name {parts.hostname!r}")
    try:
        port = parts.port
    except ValueError:
        raise DeviceError(f"bad port in {uri!r}; expected ssh://user@host[:port]") from None
    return parts.username, parts.hostname, port


class SshDevice(Device):
    """ssh://user@host[:port]. Options: identity_file, known_hosts, accept_new_host_key, python, workdir,
    ssh_config, connect_timeout, runner (unused: boards run edgekit's own runner)."""

    kind = "ssh"

    def __init__(self, uri: str, **options: Any):
        super().__init__(uri, **options)
        self.user, self.host, self.port = parse_ssh_uri(uri)
        # one authenticated connection reused by every ssh/scp of this device (a profile makes ~10 of them)
        self._control_dir = None if options.get("multiplex") is False else tempfile.mkdtemp(prefix="ek-ssh-")
        self._master_pid_checked = False

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def python(self) -> str:
        return str(self.options.get("python") or "python3")

    def _common_options(self, master: bool = False) -> list[str]:
        o = self.options
        strict = "accept-new" if o.get("accept_new_host_key") else "yes"
        args = ["-o", "BatchMode=yes", "-o", f"StrictHostKeyChecking={strict}",
                "-o", f"ConnectTimeout={int(o.get('connect_timeout', 10))}",
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=2", "-o", "LogLevel=ERROR"]
        if o.get("ssh_config"):
            args += ["-F", str(Path(o["ssh_config"]).expanduser())]
        if o.get("identity_file"):
            args += ["-i", str(Path(o["identity_file"]).expanduser()), "-o", "IdentitiesOnly=yes"]
        if o.get("known_hosts"):
            args += ["-o", f"UserKnownHostsFile={Path(o['known_hosts']).expanduser()}"]
        if self._control_dir:
            mode = ["ControlMaster=yes", "ControlPersist=120"] if master else ["ControlMaster=no"]
            for m in mode:
                args += ["-o", m]
            args += ["-o", f"ControlPath={self._control_dir}/%C"]
        return args

    def _ensure_master(self, timeout: float) -> None:
        """Open the shared connection once, with stdio on /dev/null and a file: a master that inherits a pipe would
        keep it open for its whole life and stall whoever reads that pipe."""
        if not self._control_dir or self._master_pid_checked:
            return
        self._master_pid_checked = True
        port = ["-p", str(self.port)] if self.port else []
        argv = ["ssh", *self._common_options(master=True), "-f", "-N", *port, "--", self.destination]
        with tempfile.TemporaryFile() as err:
            try:
                rc = subprocess.run(argv, check=False, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                    timeout=min(timeout, 60)).returncode
            except subprocess.TimeoutExpired:
                raise DeviceError(f"{self.uri}: connecting took longer than {min(timeout, 60):g} s") from None
            err.seek(0)
            stderr = err.read().decode("utf-8", "replace")
        self._raise_for_connection(CommandResult(argv, rc, "", stderr), "connecting")
        if rc != 0:
            raise DeviceError(f"{self.uri}: connecting failed (ssh exit {rc}): {stderr.strip()[-300:]}")

    def close(self) -> None:
        """Stop the shared connection (its master process) and remove its socket folder."""
        if not self._control_dir:
            return
        port = ["-p", str(self.port)] if self.port else []
        try:
            subprocess.run(["ssh", *self._common_options(), *port, "-O", "exit", "--", self.destination],
                           check=False, capture_output=True, timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self._control_dir, ignore_errors=True)
        self._control_dir = None

    def _ssh_argv(self, remote_command: str) -> list[str]:
        port = ["-p", str(self.port)] if self.port else []
        return ["ssh", *self._common_options(), *port, "--", self.destination, remote_command]

    def _raise_for_connection(self, res: CommandResult, what: str) -> None:
        if res.returncode != SSH_CONNECTION_ERROR:
            return
        err = res.stderr.strip()
        if "REMOTE HOST IDENTIFICATION HAS CHANGED" in err or "Host key verification failed" in err:
            hint = ("the host key does not match known_hosts (refused). If the board was re-installed, remove the "
                    "old key with `ssh-keygen -R HOST`" if "CHANGED" in err else
                    "the host key is not in known_hosts (refused); add it with ssh-keyscan, or pass "
                    "accept_new_host_key=true to trust it on first use")
            raise DeviceError(f"{self.uri}: {what}: {hint}. ssh said: {err[-300:]}")
        raise DeviceError(f"{self.uri}: {what}: connection failed or dropped (ssh exit 255): {err[-400:] or '-'}")

    def run(self, argv: list[str], timeout: float, on_line: Callable[[str], None] | None = None,
            stdin_data: bytes | None = None) -> CommandResult:
        self._ensure_master(timeout)
        res = run_process(self._ssh_argv(shlex.join(argv)), timeout, on_line, stdin_data,
                          what=f"{self.uri}: {argv[0]}")
        self._raise_for_connection(res, f"running {argv[0]}")
        return res

    def _scp(self, src: str, dst: str, timeout: float, what: str) -> None:
        self._ensure_master(timeout)
        port = ["-P", str(self.port)] if self.port else []
        res = run_process(["scp", "-q", "-r", *self._common_options(), *port, "--", src, dst], timeout, what=what)
        self._raise_for_connection(res, what)
        res.check(f"{self.uri}: {what}")

    def _remote(self, path: str) -> str:
        if _GLOB.search(path):
            raise DeviceError(f"remote path {path!r} has shell/glob characters; choose a plain workdir")
        return f"{self.destination}:{path}"

    def push(self, local: Path, remote: str, timeout: float) -> None:
        self._scp(str(local), self._remote(remote), timeout, f"copying {local.name} to the board")

    def pull(self, remote: str, local: Path, timeout: float) -> None:
        self._scp(self._remote(remote), str(local), timeout, f"copying {remote} from the board")

    def facts(self) -> dict[str, Any]:
        res = self.run(["sh", "-s"], timeout=30, stdin_data=FACTS_SCRIPT.encode())
        res.check(f"{self.uri}: reading device facts")
        facts = parse_facts(res.stdout)
        probe = self.run([self.python, "-c", RUNTIME_PROBE], timeout=60)
        if probe.returncode == 0 and probe.stdout.strip():
            facts["runtimes"] = json.loads(probe.stdout.strip().splitlines()[-1])
        else:
            facts["runtimes"] = {"python": None, "error": f"{self.python}: {probe.stderr.strip()[-200:]}"}
        return facts
