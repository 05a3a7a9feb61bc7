"""Test helpers: toy bundles with a valid manifest, free ports, process-tree killing."""
from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import socket
from pathlib import Path

import numpy as np

from edgekit.bundling.manifest import SCHEMA_VERSION, file_table
from edgekit.bundling.pin import write_pin

HERE = Path(__file__).parent
TOY_SESSION = HERE / "toy_session.py"
# File names cannot hold "/", so a name's injected command writes to the shell's cwd (home, workdir); paths can.
EVIL_NAME = "a'; touch pwned #"
EVIL_NAME_2 = "b $(touch pwned) `touch pwned`\""


def make_toy_bundle(folder: Path, delay_ms: float = 0.0, vocab: int = 512, max_seq_len: int = 256,
                    extra_files: dict[str, bytes] | None = None, pad_bytes: int = 0, all_logits: bool = False,
                    tokenizer_from: Path | None = None) -> Path:
    """A bundle whose 'model' is the numpy toy in toy_session.py (shipped inside it as standalone_session.py).
    all_logits: it returns every position's logits (speculation can run); tokenizer_from: a folder whose
    tokenizer.json and chat template the bundle carries (else a placeholder that is not a tokenizer)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.savez(folder / "toy.npz", embed=rng.standard_normal((vocab, 16)).astype(np.float32),
             head=rng.standard_normal((16, vocab)).astype(np.float32))
    template = None
    if tokenizer_from is not None:
        shutil.copy(tokenizer_from / "tokenizer.json", folder / "tokenizer.json")
        config = json.loads((tokenizer_from / "tokenizer_config.json").read_text())
        if config.get("chat_template") or (tokenizer_from / "chat_template.jinja").exists():
            text = ((tokenizer_from / "chat_template.jinja").read_text()
                    if (tokenizer_from / "chat_template.jinja").exists() else config["chat_template"])
            (folder / "chat_template.jinja").write_text(text)
            template = "chat_template.jinja"
    else:
        (folder / "tokenizer.json").write_text("{}")
    shutil.copy(TOY_SESSION, folder / "standalone_session.py")
    for name, data in (extra_files or {}).items():
        (folder / name).write_bytes(data)
    if pad_bytes:
        (folder / "padding.bin").write_bytes(os.urandom(pad_bytes))
    manifest = {
        "schema_version": SCHEMA_VERSION, "edgekit_version": "0.1.0",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(), "name": f"toy-{folder.name}",
        "model": {"name": "toy", "family": "toy", "parameters": vocab * 32, "source": "tests", "source_sha256": None,
                  "vocab_size": vocab},
        "target": {"name": "toy", "platform": "linux", "runtime": "numpy", "runtime_version": np.__version__,
                   "min_os": None},
        "artifact": {"files": ["toy.npz"], "main": "toy.npz", "target": "toy",
                     "metadata": {"max_seq_len": max_seq_len, "delay_ms": delay_ms}},
        "quant": "fp32", "kv_cache": "fp32", "max_seq_len": max_seq_len, "last_logits_only": not all_logits,
        "io": {"inputs": [], "outputs": []},
        "tokenizer": {"file": "tokenizer.json", "bos_id": None, "stop_ids": [0], "chat_template_file": template},
        "generation": {}, "validation": {},
    }
    manifest["files"] = file_table(folder)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    write_pin(folder)
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (from /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out: list[int] = []

    def walk(p: int) -> None:
        for c in children.get(p, []):
            walk(c)
        out.append(p)

    walk(pid)
    return out


def kill_tree(pid: int) -> None:
    for p in process_tree(pid):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of raw pixel bytes) of an 8-bit RGB/RGBA PNG (what Chromium writes); no PIL needed."""
    import struct
    import zlib

    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6), f"unsupported PNG: depth {depth}, color type {color}"
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, rows
