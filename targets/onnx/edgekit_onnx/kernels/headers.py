"""ONNX Runtime's C/C++ API headers, which edgekit's ONNX Runtime kernel library compiles against.

The onnxruntime wheel ships no headers. They are looked for, in order, in:
1. $EDGEKIT_ORT_INCLUDE_DIR: a folder holding onnxruntime_c_api.h (e.g. an ORT release tarball's include/);
2. /usr/include/onnxruntime (Debian / Ubuntu `libonnxruntime-dev`);
3. edgekit's cache (<cache>/ort-headers/<version>), filled by `fetch()`: the headers of Debian's libonnxruntime-dev
   package, downloaded from deb.debian.org and checked against a pinned sha256 (85 KB; the headers are the same on
   every architecture). `make setup` fetches them; a build that finds none fetches them on first use.

The library asks ONNX Runtime for API version 18 at run time, so headers of any release from 1.18 on will do; the
pinned ones are 1.21's.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path

from edgekit.errors import ExportError, MissingDependency
from edgekit.kernels.build import cache_root

log = logging.getLogger(__name__)

VERSION = "1.21.0"
DEB_URL = ("http://deb.debian.org/debian/pool/main/o/onnxruntime/"
           "libonnxruntime-dev_1.21.0+dfsg-1_amd64.deb")
DEB_SHA256 = "14f7d959d5deacbcf1504830d4189f91fc67382b399ed9ae9d3aa9c4050ced08"
MARKER = "onnxruntime_c_api.h"
NEEDED = ("onnxruntime_c_api.h", "onnxruntime_cxx_api.h", "onnxruntime_cxx_inline.h", "onnxruntime_float16.h",
          "onnxruntime_lite_custom_op.h")
SYSTEM_DIR = Path("/usr/include/onnxruntime")


def cached_dir() -> Path:
    return cache_root() / "ort-headers" / VERSION


def find() -> Path | None:
    """The first folder of the search order above that holds the headers, or None."""
    env = os.environ.get("EDGEKIT_ORT_INCLUDE_DIR")
    if env:   # an explicit choice is never passed over for another folder
        if not all((Path(env) / name).is_file() for name in NEEDED):
            raise MissingDependency(f"EDGEKIT_ORT_INCLUDE_DIR={env} does not hold ONNX Runtime's headers "
                                    f"({', '.join(NEEDED)})")
        return Path(env)
    for folder in (SYSTEM_DIR, cached_dir()):
        if all((folder / name).is_file() for name in NEEDED):
            return folder
    return None


def include_dir(fetch_missing: bool = True) -> Path:
    """The headers' folder; fetches them into the cache when none are found (unless fetch_missing is False)."""
    found = find()
    if found is not None:
        return found
    if not fetch_missing:
        raise MissingDependency(_missing_message())
    return fetch()


def _missing_message(reason: str = "") -> str:
    return ("edgekit's ONNX Runtime kernels compile against ONNX Runtime's C/C++ headers, which the onnxruntime wheel "
            f"does not ship{': ' + reason if reason else ''}. Install Debian/Ubuntu's libonnxruntime-dev, set "
            "EDGEKIT_ORT_INCLUDE_DIR to a folder holding onnxruntime_c_api.h (an ONNX Runtime release's include/), "
            "or run `python -m edgekit_onnx.kernels.headers` where deb.debian.org is reachable")


def fetch(url: str = DEB_URL, sha256: str = DEB_SHA256) -> Path:
    """Downloads the pinned libonnxruntime-dev package, checks its sha256 and unpacks its headers into the cache
    (atomically: a temp folder, then a rename). Returns the headers' folder."""
    dest = cached_dir()
    if all((dest / name).is_file() for name in NEEDED):
        return dest
    try:   # before the download: an unusable cache folder is the user's setting to fix, not a network problem
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"cannot create the ONNX Runtime headers' cache folder {dest.parent} ({e.strerror or e}); "
                          "set EDGEKIT_CACHE_DIR to a writable folder") from e
    log.info("fetching ONNX Runtime %s headers from %s", VERSION, url)
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            data = resp.read()
    except OSError as e:
        raise MissingDependency(_missing_message(f"downloading {url} failed ({e})")) from e
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise MissingDependency(_missing_message(f"{url} has sha256 {got}, expected {sha256}"))
    members = _ar_members(data)
    payload = next((members[n] for n in members if n.startswith("data.tar")), None)
    if payload is None:
        raise MissingDependency(_missing_message(f"{url} holds no data.tar member ({sorted(members)})"))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{VERSION}.partial-"))
    try:
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:*") as tar:   # xz, gz or bz2
            for info in tar.getmembers():
                name = Path(info.name)
                if info.isfile() and name.parent.as_posix().endswith("usr/include/onnxruntime") and name.suffix == ".h":
                    (tmp / name.name).write_bytes(tar.extractfile(info).read())
        missing = [n for n in NEEDED if not (tmp / n).is_file()]
        if missing:
            raise MissingDependency(_missing_message(f"{url} lacks {', '.join(missing)}"))
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _ar_members(data: bytes) -> dict[str, bytes]:
    """The members of a Debian package (an `ar` archive): name -> bytes."""
    if not data.startswith(b"!<arch>\n"):
        raise MissingDependency(_missing_message("the download is not a Debian package"))
    out, pos = {}, 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        out[name] = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size % 2)
    return out


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(include_dir())
