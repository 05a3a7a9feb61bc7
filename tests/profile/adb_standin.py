"""A stand-in for an Android phone: a TCP server speaking adbd's wire protocol, for the REAL `adb` client.

`adb connect 127.0.0.1:PORT` makes the adb server talk to it like to any network-attached phone. It implements what
adb needs for `shell` and `push`/`pull`: CNXN (no AUTH), OPEN/OKAY/WRTE/CLSE streams with adb's one-message flow
control, the `shell:` service (v1, raw: stdout+stderr merged, the stream closes when the command ends) and the `sync:`
service (STAT, SEND/DATA/DONE, RECV, QUIT, FAIL). The phone's file system root is a sandbox folder: sync paths are
mapped under it, and shell commands run with `/data/local/tmp` rewritten to the sandbox's copy and a fake `getprop`
(and optionally `df`) first on PATH. Only the phone is a stand-in: the adb client and server are Debian's `adb`.
"""
from __future__ import annotations

import logging
import os
import queue
import socket
import stat
import struct
import subprocess
import threading
from pathlib import Path

log = logging.getLogger("adb-standin")

A_CNXN, A_OPEN, A_OKAY, A_CLSE, A_WRTE, A_AUTH = (struct.unpack("<I", c)[0] for c in
                                                  (b"CNXN", b"OPEN", b"OKAY", b"CLSE", b"WRTE", b"AUTH"))
A_VERSION = 0x01000001       # skips payload checksums (we still send them)
MAX_PAYLOAD = 256 * 1024
HEADER = struct.Struct("<6I")
PROPS = {"ro.product.model": "EdgekitStandIn", "ro.product.manufacturer": "edgekit-tests",
         "ro.build.version.release": "14", "ro.build.version.sdk": "34", "ro.soc.model": "standin-soc",
         "ro.product.cpu.abi": "x86_64"}


def _checksum(data: bytes) -> int:
    return sum(data) & 0xFFFFFFFF


class Stream:
    def __init__(self, server: AdbStandIn, local_id: int, remote_id: int):
        self.server, self.local_id, self.remote_id = server, local_id, remote_id
        self.inbox: queue.Queue[bytes | None] = queue.Queue()
        self.okay = threading.Semaphore(0)
        self.closed = False

    def write(self, data: bytes) -> None:
        for i in range(0, len(data), MAX_PAYLOAD):
            if self.closed:
                return
            self.server.send(A_WRTE, self.local_id, self.remote_id, data[i:i + MAX_PAYLOAD])
            while not self.okay.acquire(timeout=0.5):     # adb: one WRTE in flight until the peer's OKAY
                if self.closed or self.server.dropped:
                    return

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.server.send(A_CLSE, self.local_id, self.remote_id, b"")


class AdbStandIn:
    def __init__(self, sandbox: Path, fake_free_kb: int | None = None):
        self.sandbox = Path(sandbox)
        (self.sandbox / "data" / "local" / "tmp").mkdir(parents=True, exist_ok=True)
        self.bin = self.sandbox / "system" / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        self._write_tools(fake_free_kb)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conn: socket.socket | None = None
        self.streams: dict[int, Stream] = {}
        self.next_id = 1
        self.lock = threading.Lock()
        self.dropped = False
        self.children: list[subprocess.Popen] = []
        self.commands: list[str] = []          # every shell command received, for the tests to inspect
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_tools(self, fake_free_kb: int | None) -> None:
        lines = "\n".join(f'  {k}) echo "{v}" ;;' for k, v in PROPS.items())
        (self.bin / "getprop").write_text(f'#!/bin/sh\ncase "$1" in\n{lines}\n  *) echo "" ;;\nesac\n')
        (self.bin / "getprop").chmod(0o755)
        if fake_free_kb is not None:   # a phone with almost no free storage
            (self.bin / "df").write_text(
                "#!/bin/sh\necho 'Filesystem 1K-blocks Used Available Use% Mounted on'\n"
                f"echo '/dev/block/dm-5 1000000 {1000000 - fake_free_kb} {fake_free_kb} 99% /data'\n")
            (self.bin / "df").chmod(0o755)

    # ---- transport -----------------------------------------------------------------------------
    def send(self, cmd: int, arg0: int, arg1: int, data: bytes) -> None:
        with self.lock:
            if self.conn is None or self.dropped:
                return
            try:
                self.conn.sendall(HEADER.pack(cmd, arg0, arg1, len(data), _checksum(data), cmd ^ 0xFFFFFFFF) + data)
            except OSError:
                pass

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.conn.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("peer closed")
            buf += chunk
        return buf

    def _accept_loop(self) -> None:
        while not self.dropped:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.conn = conn
            try:
                self._serve()
            except (ConnectionError, OSError) as e:
                log.debug("connection ended: %s", e)
            finally:
                for s in list(self.streams.values()):
                    s.closed = True
                    s.inbox.put(None)
                self.streams.clear()

    def _serve(self) -> None:
        while True:
            cmd, arg0, arg1, length, _check, _magic = HEADER.unpack(self._recv_exact(HEADER.size))
            data = self._recv_exact(length) if length else b""
            if cmd == A_CNXN:
                banner = "device::" + "".join(f"{k}={v};" for k, v in PROPS.items()) + "features=cmd"
                self.send(A_CNXN, A_VERSION, MAX_PAYLOAD, banner.encode())
            elif cmd == A_OPEN:
                self._open(arg0, data.rstrip(b"\0").decode())
            elif cmd == A_OKAY and arg1 in self.streams:
                s = self.streams[arg1]
                s.remote_id = arg0
                s.okay.release()
            elif cmd == A_WRTE and arg1 in self.streams:
                self.streams[arg1].inbox.put(data)
                self.send(A_OKAY, arg1, arg0, b"")
            elif cmd == A_CLSE and arg1 in self.streams:
                s = self.streams.pop(arg1)
                s.inbox.put(None)
                if not s.closed:
                    s.closed = True
                    self.send(A_CLSE, s.local_id, s.remote_id, b"")

    def _open(self, remote_id: int, service: str) -> None:
        local_id, self.next_id = self.next_id, self.next_id + 1
        stream = Stream(self, local_id, remote_id)
        if service.startswith("shell:"):
            target = self._shell
        elif service.startswith("sync:"):
            target = self._sync
        else:
            self.send(A_CLSE, 0, remote_id, b"")
            return
        self.streams[local_id] = stream
        self.send(A_OKAY, local_id, remote_id, b"")
        threading.Thread(target=self._run_service, args=(target, stream, service), daemon=True).start()

    def _run_service(self, target, stream: Stream, service: str) -> None:
        try:
            target(stream, service)
        except (ConnectionError, OSError) as e:
            log.debug("%s ended: %s", service[:40], e)
        finally:
            stream.close()

    # ---- services ------------------------------------------------------------------------------
    def _shell(self, stream: Stream, service: str) -> None:
        command = service[len("shell:"):]
        self.commands.append(command)
        mapped = command.replace("/data/local/tmp", str(self.sandbox / "data" / "local" / "tmp"))
        env = {**os.environ, "PATH": f"{self.bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        proc = subprocess.Popen(["sh", "-c", mapped], cwd=self.sandbox, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.children.append(proc)
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):
            stream.write(chunk)
            if self.dropped:
                proc.kill()
                break
        proc.wait()

    def _path(self, remote: str) -> Path:
        return self.sandbox / remote.lstrip("/")

    def _sync(self, stream: Stream, service: str) -> None:
        reader = _StreamReader(stream)
        while True:
            ident, length = struct.unpack("<4sI", reader.read(8))
            if ident == b"QUIT":
                return
            if ident == b"STAT":
                self._stat(stream, reader.read(length).decode())
            elif ident == b"SEND":
                self._receive_file(stream, reader, reader.read(length).decode())
            elif ident == b"RECV":
                self._send_file(stream, reader.read(length).decode())
            else:
                _fail(stream, f"unsupported sync request {ident!r}")
                return

    def _stat(self, stream: Stream, remote: str) -> None:
        p = self._path(remote)
        if p.exists():
            st = p.stat()
            stream.write(b"STAT" + struct.pack("<III", st.st_mode, st.st_size & 0xFFFFFFFF, int(st.st_mtime)))
        else:
            stream.write(b"STAT" + struct.pack("<III", 0, 0, 0))

    def _receive_file(self, stream: Stream, reader: _StreamReader, spec: str) -> None:
        remote, _, mode = spec.rpartition(",")
        dest = self._path(remote)
        dest.parent.mkdir(parents=True, exist_ok=True)     # adbd creates parent folders on SEND
        with open(dest, "wb") as f:
            while True:
                ident, length = struct.unpack("<4sI", reader.read(8))
                if ident == b"DATA":
                    f.write(reader.read(length))
                elif ident == b"DONE":
                    break
                else:
                    _fail(stream, f"unexpected {ident!r} during SEND")
                    return
        if mode.isdigit():
            os.chmod(dest, stat.S_IMODE(int(mode)))
        stream.write(b"OKAY" + struct.pack("<I", 0))

    def _send_file(self, stream: Stream, remote: str) -> None:
        p = self._path(remote)
        if not p.is_file():
            _fail(stream, f"remote object '{remote}' does not exist")
            return
        with open(p, "rb") as f:
            while chunk := f.read(64 * 1024):
                stream.write(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
        stream.write(b"DONE" + struct.pack("<I", 0))

    # ---- faults --------------------------------------------------------------------------------
    def drop(self) -> None:
        """The phone vanishes: its connection and listener close, its running commands die."""
        self.dropped = True
        for proc in self.children:
            if proc.poll() is None:
                proc.kill()
        for sock in (self.conn, self.listener):
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()


class _StreamReader:
    """Sync requests arrive split across (or packed into) WRTE messages: read them as one byte stream."""

    def __init__(self, stream: Stream):
        self.stream, self.buf = stream, b""

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.stream.inbox.get()
            if chunk is None:
                raise ConnectionError("stream closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def _fail(stream: Stream, message: str) -> None:
    data = message.encode()
    stream.write(b"FAIL" + struct.pack("<I", len(data)) + data)
