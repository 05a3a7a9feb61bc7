"""The bundle's README.md: rendered from a Jinja template with the matching sample app's own code."""
from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from edgekit.bundling.manifest import MANIFEST

TEMPLATES = Path(__file__).parent / "templates"
# platform -> (sample folder, file holding the loading code, code-fence language)
SAMPLES = {
    "linux": ("samples/iot", "chat.py", "python"),
    "android": ("samples/android", "app/src/main/java/dev/edgekit/sample/BundleRunner.kt", "kotlin"),
    "ios": ("samples/ios", "Sources/EdgekitSample/BundleRunner.swift", "swift"),
}
_MARKED = re.compile(r"edgekit-readme:begin[^\n]*\n(.*?)\n[^\n]*edgekit-readme:end", re.DOTALL)


def samples_root() -> Path | None:
    """The samples/ folder of a source checkout (absent from an installed wheel)."""
    root = Path(__file__).resolve().parents[2] / "samples"
    return root if root.is_dir() else None


@cache
def sample_code(platform: str) -> tuple[str, str, str] | None:
    """(sample path, language, marked excerpt) for a platform, or None when the samples are not available."""
    if platform not in SAMPLES or samples_root() is None:
        return None
    folder, rel, lang = SAMPLES[platform]
    path = samples_root().parent / folder / rel
    if not path.is_file():
        return None
    text = path.read_text(encoding="utf-8")
    m = _MARKED.search(text)
    return f"{folder}/{rel}", lang, (m.group(1) if m else text).strip("\n")


def _compact_json(value: Any) -> str:
    """Indented JSON with lists of plain values kept on one line (shapes stay readable)."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return re.sub(r"\[\s+([^\[\]{}]*?)\s+\]", lambda m: "[" + ", ".join(p.strip() for p in m.group(1).split(",")) + "]",
                  text)


def render_readme(manifest: dict[str, Any]) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(loader=FileSystemLoader(TEMPLATES), keep_trailing_newline=True, trim_blocks=True,
                      lstrip_blocks=True, undefined=StrictUndefined, autoescape=False)
    platform = manifest["target"]["platform"]
    sample = sample_code(platform)
    return env.get_template("README.md.j2").render(
        m=manifest, platform=platform, sample=sample, manifest_name=MANIFEST,
        io_json=_compact_json(manifest["io"]),
        sample_folder=SAMPLES.get(platform, ("samples", "", ""))[0])
