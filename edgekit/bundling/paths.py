"""Every path a manifest names stays inside its bundle and points at a hashed file.

A reader (a target's session, the sample apps, the profiler) opens files by the names in manifest.json: the model,
kernel libraries it loads into the process, the standalone session it imports, the tokenizer. Each such name must be
relative and normalised, resolve (symlinks included) inside the bundle folder, and be an entry of `files`, whose
sha256 verify checks; a folder name (an .mlpackage) must hold only such entries.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgekit.bundling.manifest import safe_relpath
from edgekit.errors import BundleError

# Named fields, as (dotted path, may name a folder). Lists are checked item by item; null means "none".
FIELDS: tuple[tuple[str, bool], ...] = (
    ("artifact.main", True),        # an .mlpackage is a folder
    ("artifact.files", True),
    ("tokenizer.file", False),
    ("tokenizer.chat_template_file", False),
    ("tokenizer.config_file", False),
    ("kernels", True),
    ("runner.file", False),
    ("runner.speculate_file", False),
)
# Inside `io` and `artifact.metadata` (free-form, written by each target) these keys name files.
PATH_KEYS = frozenset({"main", "file", "files", "genai_config", "custom_op_libraries"})
PATH_SUFFIXES = ("_file", "_files", "_path", "_paths", "_library", "_libraries")
# Subtrees that record where things came from on the exporting machine; nothing opens them from the bundle.
NOT_PATHS = frozenset({"model", "file_hashes", "validation"})


def _lookup(doc: dict[str, Any], dotted: str) -> Any:
    cur: Any = doc
    for part in dotted.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _is_path_key(key: str) -> bool:
    return key in PATH_KEYS or key.endswith(PATH_SUFFIXES)


def _free_form(node: Any, where: str) -> Iterator[tuple[str, Any]]:
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if key in NOT_PATHS:
            continue
        if _is_path_key(key) and isinstance(value, (str, list)):
            yield f"{where}.{key}", value
        elif isinstance(value, dict):
            yield from _free_form(value, f"{where}.{key}")


def named_paths(doc: dict[str, Any]) -> Iterator[tuple[str, Any, bool]]:
    """(field, value, may be a folder) for every path-like value in the manifest (values unchecked)."""
    for dotted, folder_ok in FIELDS:
        value = _lookup(doc, dotted)
        if value is not None:
            yield dotted, value, folder_ok
    for where in ("io", "artifact.metadata"):
        for field, value in _free_form(_lookup(doc, where), where):
            yield field, value, True


def check_paths(folder: Path, doc: dict[str, Any]) -> int:
    """BundleError naming the field and value of the first path that escapes the bundle or is not hashed; returns
    how many paths were checked."""
    files: dict[str, Any] = doc["files"]
    root = folder.resolve()
    for rel in files:
        _check_one(root, "files", rel, files, folder_ok=False)
    n = len(files)
    for field, value, folder_ok in named_paths(doc):
        items = value if isinstance(value, list) else [value]
        for i, rel in enumerate(items):
            name = f"{field}[{i}]" if isinstance(value, list) else field
            _check_one(root, name, rel, files, folder_ok)
            n += 1
    return n


def _check_one(root: Path, field: str, rel: Any, files: dict[str, Any], folder_ok: bool) -> None:
    def refuse(why: str) -> BundleError:
        return BundleError(f"{root / 'manifest.json'}: {field} is {rel!r}, which {why}; a bundle names only "
                           "relative paths to its own hashed files; re-bundle it (edgekit bundle ...)")

    if not isinstance(rel, str):
        raise refuse("is not a path string")
    if not safe_relpath(rel):
        raise refuse("is not a normalised relative path inside the bundle (absolute, '..', '.', '\\' or empty "
                     "parts)")
    resolved = (root / rel).resolve()
    if not resolved.is_relative_to(root):
        raise refuse(f"resolves outside the bundle (to {resolved})")
    if rel in files:
        return
    if folder_ok and any(k.startswith(rel + "/") for k in files):
        return
    raise refuse("is not an entry of the manifest's 'files' (so its sha256 is not checked)")
