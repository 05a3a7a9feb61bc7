"""Check a bundle folder against its manifest: the manifest's pin (and signature, when a public key is given),
schema, every named path inside the bundle and hashed, every file's size and sha256, nothing missing or unlisted."""
from __future__ import annotations

import json
import logging
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.bundling.manifest import MANIFEST, check_schema, walk_files
from edgekit.bundling.paths import check_paths
from edgekit.bundling.pin import read_pinned
from edgekit.errors import BundleError
from edgekit.hashing import file_sha256

log = logging.getLogger(__name__)


@dataclass
class Report:
    """What a verification looked at (every check passed if you hold one)."""

    path: Path
    manifest: dict[str, Any]
    files_checked: int = 0
    bytes_checked: int = 0
    checks: list[str] = field(default_factory=list)


def read_manifest(folder: Path, public_key: str | Path | None = None) -> dict[str, Any]:
    """The manifest, parsed from the very bytes its pin (and signature) were checked against."""
    path = folder / MANIFEST
    data = read_pinned(folder)
    if public_key is not None:
        from edgekit.bundling.signing import check_signature

        check_signature(folder, data, public_key)
    try:
        doc = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise BundleError(f"{path} is not valid JSON ({e}); the bundle is damaged") from None
    check_schema(doc, str(path))
    check_lengths(doc, str(path))
    return doc


def verify_folder(folder: str | Path, *, check_target: bool = True, public_key: str | Path | None = None) -> Report:
    """Verify everything in `folder`; the first problem class found raises BundleError naming every bad file.

    With `public_key` (an Ed25519 PEM), manifest.sig must be its valid signature of manifest.json."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BundleError(f"{folder} is not a bundle folder (or .zip)")
    _refuse_links(folder)
    doc = read_manifest(folder, public_key)
    checks = [f"manifest schema {doc['schema_version']}", "manifest.json matches manifest.sha256"]
    if public_key is not None:
        checks.append(f"manifest.sig valid for {public_key}")
    report = Report(path=folder, manifest=doc, checks=checks)
    listed: dict[str, dict[str, Any]] = doc["files"]
    report.checks.append(f"{check_paths(folder, doc)} named paths inside the bundle and hashed")
    missing = [rel for rel in listed if not (folder / rel).is_file()]
    if missing:
        raise BundleError(f"bundle {folder} is incomplete: missing file(s) {', '.join(sorted(missing))}")
    unlisted = sorted(set(walk_files(folder)) - set(listed))
    if unlisted:
        raise BundleError(f"bundle {folder} has file(s) not in its manifest: {', '.join(unlisted)}; "
                          "files added after bundling are refused")
    bad = []
    for rel, entry in sorted(listed.items()):
        p = folder / rel
        size = p.stat().st_size
        if size != entry["bytes"]:
            bad.append(f"{rel} ({size} bytes, manifest says {entry['bytes']})")
        elif file_sha256(p) != entry["sha256"]:
            bad.append(f"{rel} (sha256 differs from the manifest)")
        report.files_checked += 1
        report.bytes_checked += size
    if bad:
        raise BundleError(f"bundle {folder}: file(s) changed after bundling: {'; '.join(bad)}")
    report.checks.append(f"{report.files_checked} files, sha256 and size")
    if check_target:
        from edgekit.targets.registry import get_target

        tgt = get_target(doc["target"]["name"])  # UnknownTarget lists the installed ones
        if tgt.name != doc["target"]["name"]:
            raise BundleError(f"manifest target {doc['target']['name']!r} is an alias; bundles record the canonical "
                              f"name ({tgt.name!r})")
        report.checks.append(f"target {tgt.name} installed")
    log.info("verified %s: %s", folder, ", ".join(report.checks))
    return report


def _refuse_links(folder: Path) -> None:
    for p in folder.rglob("*"):
        mode = p.lstat().st_mode
        if stat.S_ISLNK(mode):
            raise BundleError(f"bundle {folder} contains a symbolic link {p.relative_to(folder)}; bundles hold "
                              "regular files only")


def check_lengths(doc: dict[str, Any], where: str) -> None:
    """max_seq_len is the length the artifact was exported for, within the model's positions: a larger one would
    fail deep in the runtime (a rope table or KV cache shorter than asked) at the first long prompt."""
    n = doc["max_seq_len"]
    exported = doc["artifact"]["metadata"].get("max_seq_len")
    if isinstance(exported, int) and not isinstance(exported, bool) and exported != n:
        raise BundleError(f"{where}: max_seq_len {n} differs from the artifact's exported max_seq_len {exported}; "
                          "the manifest was edited or the bundle is damaged; re-bundle it")
    limit = doc["model"].get("max_position_embeddings")
    if isinstance(limit, int) and not isinstance(limit, bool):
        for name, value in (("max_seq_len", n), ("artifact.metadata.max_seq_len", exported)):
            if isinstance(value, int) and value > limit:
                raise BundleError(f"{where}: {name} {value} is larger than the model's max_position_embeddings "
                                  f"{limit}; accepted: 2..{limit}; re-export with --max-seq-len {limit} or less")
