"""The manifest's own hash: `manifest.sha256` beside manifest.json pins its exact bytes, so an edited manifest (a
path pointed elsewhere, a hash replaced) is refused even when every file still matches what it now claims.

The pin file is in `sha256sum` format (`<hex>  manifest.json`), so `sha256sum -c manifest.sha256` checks it too. The
pin detects damage and casual edits; someone who can rewrite the folder can rewrite the pin as well, which is what
the optional signature (edgekit.bundling.signing) is for.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

from edgekit.bundling.manifest import MANIFEST, PIN
from edgekit.errors import BundleError

_PIN_LINE = re.compile(rf"^([0-9a-f]{{64}})  {re.escape(MANIFEST)}\n?$")


def pin_text(manifest_bytes: bytes) -> str:
    return f"{hashlib.sha256(manifest_bytes).hexdigest()}  {MANIFEST}\n"


def write_pin(folder: Path) -> None:
    (folder / PIN).write_text(pin_text((folder / MANIFEST).read_bytes()), encoding="ascii")


def read_pinned(folder: Path) -> bytes:
    """manifest.json's bytes, once they match the pin; BundleError naming the file and what to do otherwise."""
    path = folder / MANIFEST
    if not path.is_file():
        raise BundleError(f"{folder} is not an edgekit bundle: it has no {MANIFEST}")
    data = path.read_bytes()
    pin = folder / PIN
    if not pin.is_file():
        raise BundleError(f"{folder} has no {PIN}, so {MANIFEST} cannot be checked (a bundle from an older edgekit, "
                          "or the pin was removed); re-bundle it with this edgekit (edgekit bundle ...)")
    m = _PIN_LINE.match(pin.read_text(encoding="ascii", errors="replace"))
    if m is None:
        raise BundleError(f"{pin} is not '<64 hex digits>  {MANIFEST}'; the bundle is damaged; re-bundle it")
    got = hashlib.sha256(data).hexdigest()
    if got != m.group(1):
        raise BundleError(f"{path} does not match {pin} (sha256 {got[:12]}..., pinned {m.group(1)[:12]}...): the "
                          "manifest was edited or damaged after bundling; re-bundle it (edgekit bundle ...)")
    return data
