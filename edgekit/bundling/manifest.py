"""manifest.json: the versioned schema shared by bundles and the profiler (which reads a bundle on devices that never
exported it), built and checked here."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import BundleError
from edgekit.hashing import file_sha256

MANIFEST = "manifest.json"
PIN = "manifest.sha256"        # sha256 of manifest.json's bytes (edgekit.bundling.pin)
SIGNATURE = "manifest.sig"     # optional Ed25519 signature of them (edgekit.bundling.signing)
# Files beside manifest.json that describe it, so they cannot be entries of its own `files` table.
SIDECARS = (MANIFEST, PIN, SIGNATURE)
# 2: manifest.sha256 is required, and every path the manifest names must be a hashed entry of `files`.
SCHEMA_VERSION = 2


@dataclass(frozen=True)
class Field:
    """One required manifest key: a dotted path and the JSON type(s) its value must have."""

    path: str
    types: tuple[type, ...]
    optional: bool = False          # may be null


_NUM = (int, float)
# Schema v1. Readers of a bundle (samples, profiler) may rely on every key listed here.
SCHEMA_V1: tuple[Field, ...] = (
    Field("schema_version", (int,)),
    Field("edgekit_version", (str,)),
    Field("created", (str,)),
    Field("name", (str,)),
    Field("model", (dict,)),
    Field("model.name", (str,)),
    Field("model.family", (str,)),
    Field("model.parameters", (int,)),
    Field("model.source", (str,)),
    Field("model.source_sha256", (str,), optional=True),
    Field("model.vocab_size", (int,)),
    Field("target", (dict,)),
    Field("target.name", (str,)),
    Field("target.platform", (str,)),
    Field("target.runtime", (str,)),
    Field("target.runtime_version", (str,), optional=True),
    Field("target.min_os", (str,), optional=True),
    Field("artifact", (dict,)),
    Field("artifact.files", (list,)),
    Field("artifact.main", (str,)),
    Field("artifact.target", (str,)),
    Field("artifact.metadata", (dict,)),
    Field("quant", (str,)),
    Field("kv_cache", (str,)),
    Field("max_seq_len", (int,)),
    Field("last_logits_only", (bool,)),
    Field("io", (dict,)),
    Field("tokenizer", (dict,)),
    Field("tokenizer.file", (str,)),
    Field("tokenizer.bos_id", (int,), optional=True),
    Field("tokenizer.stop_ids", (list,)),
    Field("tokenizer.chat_template_file", (str,), optional=True),
    Field("generation", (dict,)),
    Field("files", (dict,)),
    Field("validation", (dict,)),
)


def get_path(doc: dict[str, Any], dotted: str) -> Any:
    """doc["a"]["b"] for "a.b"; KeyError naming the dotted path when a level is missing."""
    cur: Any = doc
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise KeyError(dotted)
        cur = cur[part]
    return cur


def check_schema(doc: Any, where: str = MANIFEST) -> None:
    """Every key of the schema present with the right type; a newer schema version is refused up front."""
    if not isinstance(doc, dict):
        raise BundleError(f"{where} is not a JSON object")
    version = doc.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise BundleError(f"{where}: schema_version is {version!r}; expected an integer (this edgekit reads "
                          f"1..{SCHEMA_VERSION})")
    if version > SCHEMA_VERSION:
        raise BundleError(f"{where} uses manifest schema version {version}, newer than this edgekit reads "
                          f"(1..{SCHEMA_VERSION}); upgrade edgekit to open this bundle")
    if version < 1:
        raise BundleError(f"{where}: schema_version {version} is not valid; accepted: 1..{SCHEMA_VERSION}")
    problems = []
    for f in SCHEMA_V1:
        try:
            value = get_path(doc, f.path)
        except KeyError:
            problems.append(f"missing {f.path!r}")
            continue
        if value is None and f.optional:
            continue
        if isinstance(value, bool) and bool not in f.types or not isinstance(value, f.types):
            names = "/".join(t.__name__ for t in f.types)
            problems.append(f"{f.path!r} is {type(value).__name__} {_short(value)}, expected {names}")
    if problems:
        raise BundleError(f"{where} does not match manifest schema {version}: " + "; ".join(problems))
    _check_consistency(doc, where)


def _check_consistency(doc: dict[str, Any], where: str) -> None:
    files = doc["files"]
    problems = []
    for rel in doc["artifact"]["files"]:
        if not isinstance(rel, str) or not (rel in files or any(k.startswith(rel.rstrip("/") + "/") for k in files)):
            problems.append(f"artifact.files entry {rel!r} is not listed in 'files'")
    if doc["artifact"]["main"] not in doc["artifact"]["files"]:
        problems.append(f"artifact.main {doc['artifact']['main']!r} is not one of artifact.files")
    if doc["tokenizer"]["file"] not in files:
        problems.append(f"tokenizer.file {doc['tokenizer']['file']!r} is not listed in 'files'")
    tmpl = doc["tokenizer"].get("chat_template_file")
    if tmpl is not None and tmpl not in files:
        problems.append(f"tokenizer.chat_template_file {tmpl!r} is not listed in 'files'")
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in doc["tokenizer"]["stop_ids"]):
        problems.append(f"tokenizer.stop_ids {doc['tokenizer']['stop_ids']!r} must be a list of integers")
    if doc["max_seq_len"] < 2:
        problems.append(f"max_seq_len {doc['max_seq_len']} must be >= 2")
    if doc["target"]["name"] != doc["artifact"]["target"]:
        problems.append(f"target.name {doc['target']['name']!r} differs from artifact.target {doc['artifact']['target']!r}")
    for rel, entry in files.items():
        if not safe_relpath(rel):
            problems.append(f"file path {rel!r} points outside the bundle")
        elif not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and len(entry["sha256"]) == 64
                  and isinstance(entry.get("bytes"), int) and entry["bytes"] >= 0):
            problems.append(f"files[{rel!r}] needs a 64-hex sha256 and a byte count, got {_short(entry)}")
    if problems:
        raise BundleError(f"{where} is inconsistent: " + "; ".join(problems))


def safe_relpath(rel: str) -> bool:
    """A forward-slash relative path that stays inside its folder (no absolute, drive, '..', or empty parts)."""
    if not rel or rel.startswith(("/", "\\")) or "\\" in rel or ":" in rel.split("/")[0]:
        return False
    parts = rel.split("/")
    return all(p not in ("", ".", "..") for p in parts)


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


def walk_files(root: Path) -> list[str]:
    """Every regular file under root as a sorted forward-slash relative path (the manifest and its pin and
    signature excluded)."""
    out = []
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            rel = (Path(dirpath) / n).relative_to(root).as_posix()
            if rel not in SIDECARS:
                out.append(rel)
    return sorted(out)


def file_table(root: Path) -> dict[str, dict[str, Any]]:
    return {rel: {"sha256": file_sha256(root / rel), "bytes": (root / rel).stat().st_size} for rel in walk_files(root)}
