"""Edit a bundle's manifest the way someone with write access to the folder would: the pin is rewritten too, so
the checks after the pin (schema, paths, hashes, signature) are what must catch the edit."""
from __future__ import annotations

import json
from pathlib import Path

from edgekit.bundling.pin import write_pin


def edit_manifest(folder: Path, change, repin: bool = True) -> None:
    path = folder / "manifest.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))
    if repin:
        write_pin(folder)
