"""The manifest keys each sample app reads, found in its source: dotted-path helper calls in Kotlin and Swift
(`at("a.b")`, `manifest.string("a.b")`), subscripts and .get() on the manifest (and names bound to parts of it)
in Python."""
from __future__ import annotations

import ast
import re
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
KOTLIN = re.compile(r"\b(?:optAt|at)\(\"([^\"]+)\"\)")
SWIFT = re.compile(r"\bmanifest\.(?:at|string|int|double|ints)\(\"([^\"]+)\"\)")


def _regex_keys(files: list[Path], pattern: re.Pattern) -> set[str]:
    return {k for f in files for k in pattern.findall(f.read_text())}


def android_keys() -> set[str]:
    return _regex_keys(sorted((SAMPLES / "android").rglob("*.kt")), KOTLIN)


def ios_keys() -> set[str]:
    return _regex_keys(sorted((SAMPLES / "ios").rglob("*.swift")), SWIFT)


def python_keys(path: Path = SAMPLES / "iot" / "chat.py") -> set[str]:
    """Subscript chains and .get("k") calls rooted at `manifest` / `<x>.manifest`, following simple aliases."""
    tree = ast.parse(path.read_text())
    aliases: dict[str, str] = {}

    def resolve(node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return "" if node.id == "manifest" else aliases.get(node.id)
        if isinstance(node, ast.Attribute) and node.attr == "manifest":
            return ""
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) \
                and isinstance(node.slice.value, str):
            base = resolve(node.value)
            return None if base is None else f"{base}.{node.slice.value}".lstrip(".")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and node.args and isinstance(node.args[0], ast.Constant):
            base = resolve(node.func.value)
            return None if base is None else f"{base}.{node.args[0].value}".lstrip(".")
        return None

    for _ in range(3):  # aliases of aliases
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                path = resolve(node.value)
                if path is not None:
                    aliases[node.targets[0].id] = path
    keys = {resolve(n) for n in ast.walk(tree) if isinstance(n, (ast.Subscript, ast.Call))}
    return {k for k in keys if k}
