"""An export folder's file hashes: recorded when the export is written, checked when it is bundled.

The validation figures in artifact.json describe the files as they were validated. A file changed afterwards (edited,
replaced by another export's, truncated) would carry figures that are not its own into the bundle's manifest, so
bundling such a folder is refused. An artifact written before the hashes were recorded cannot be checked: it is
bundled without its validation figures, and a warning says why.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from edgekit.errors import BundleError
from edgekit.hashing import file_sha256
from edgekit.targets.base import Artifact

log = logging.getLogger(__name__)
FILE_HASHES = "file_hashes"


def artifact_file_hashes(root: Path, files: list[str]) -> dict[str, dict[str, Any]]:
    """relative path -> {sha256, bytes} for every regular file of the artifact (folders such as model.mlpackage/
    are walked)."""
    return {rel: {"sha256": file_sha256(root / rel), "bytes": (root / rel).stat().st_size}
            for rel in _artifact_paths(root, files)}


def _artifact_paths(root: Path, files: list[str]) -> list[str]:
    out = []
    for rel in files:
        path = root / rel
        found = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        out += [p.relative_to(root).as_posix() for p in found if p.is_file()]
    return out


def check_unchanged(art: Artifact) -> Artifact:
    """The artifact if its files are the ones it recorded; BundleError naming the first that changed. A legacy
    artifact (no hashes recorded) comes back as a copy without validation figures."""
    recorded = art.metadata.get(FILE_HASHES)
    if recorded is None:
        if art.metadata.get("validation"):
            log.warning("%s records no file hashes (exported by an older edgekit): its validation figures cannot be "
                        "tied to its files and are left out of the bundle; export again to keep them", art.path)
        return dataclasses.replace(art, metadata={k: v for k, v in art.metadata.items() if k != "validation"})
    for rel in sorted(set(recorded) | set(_artifact_paths(art.path, art.files))):
        old = recorded.get(rel)
        path = art.path / rel
        if old is None or not path.is_file():
            what = "was added" if old is None else "is missing"
            raise BundleError(_changed(art, rel, what))
        size = path.stat().st_size
        if size != old["bytes"]:
            raise BundleError(_changed(art, rel, f"has {size} bytes, {old['bytes']} when exported"))
        if file_sha256(path) != old["sha256"]:
            raise BundleError(_changed(art, rel, "has other contents (sha256 differs)"))
    return art


def _changed(art: Artifact, rel: str, what: str) -> str:
    return (f"{art.path / rel} {what}: the export folder changed after it was written and validated, so its "
            "validation figures do not describe these files; export again (or validate the changed files by "
            "exporting them anew) before bundling")
