"""ProfileReport: the JSON document of one profile run (schema in docs/profile-schema.md), and its Markdown form."""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
from pathlib import Path
from typing import Any

from edgekit.errors import EdgekitError

SCHEMA_VERSION = 1
KIND = "edgekit.profile"


class ProfileReport:
    """A thin wrapper over the report dict (`.data`); `.results`, `.device`, `.bundle`, `.settings` are its parts."""

    def __init__(self, data: dict[str, Any]):
        self.data = data
        self.warnings: list[str] = []   # optional steps that failed (history), for the caller to show

    # ---- parts ---------------------------------------------------------------------------------
    @property
    def results(self) -> dict[str, Any]:
        return self.data["results"]

    @property
    def device(self) -> dict[str, Any]:
        return self.data["device"]

    @property
    def bundle(self) -> dict[str, Any]:
        return self.data["bundle"]

    @property
    def settings(self) -> dict[str, Any]:
        return self.data["settings"]

    @property
    def complete(self) -> bool:
        return bool(self.data.get("complete"))

    @property
    def label(self) -> str:
        return f"{self.bundle.get('name', '?')} @ {self.device.get('name') or self.device.get('uri')}"

    @property
    def regressions(self) -> list[dict[str, Any]]:
        return (self.data.get("regressions") or {}).get("found", [])

    def __repr__(self) -> str:
        d = (self.results.get("decode_tokens_per_s") or {}).get("median")
        return f"ProfileReport({self.label!r}, decode={d and round(d, 1)} tok/s, complete={self.complete})"

    # ---- files ---------------------------------------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(self.data, indent=2, sort_keys=False)

    def write_json(self, path: str | Path) -> Path:
        return _write(path, self.to_json())

    def to_markdown(self) -> str:
        from edgekit.profiling.markdown import render_markdown

        return render_markdown([self])

    def write_markdown(self, path: str | Path) -> Path:
        return _write(path, self.to_markdown())

    def to_html(self) -> str:
        from edgekit.profiling.html import render_html

        return render_html([self])

    def write_html(self, path: str | Path) -> Path:
        return _write(path, self.to_html())

    @classmethod
    def load(cls, path: str | Path) -> ProfileReport:
        p = Path(path)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:   # ValueError: bad JSON, and bytes that are not UTF-8 (a binary file)
            raise EdgekitError(f"{p} is not a readable profile report (a JSON file written by edgekit profile "
                               f"--json): {type(e).__name__}: {e}") from None
        return cls.from_dict(data, str(p))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "report") -> ProfileReport:
        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise EdgekitError(f"{where} is not an edgekit profile report (kind must be {KIND!r})")
        version = data.get("schema_version")
        if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
            raise EdgekitError(f"{where}: profile schema_version {version!r} is not readable by this edgekit "
                               f"(accepted: 1..{SCHEMA_VERSION})")
        for key in ("device", "bundle", "settings", "results"):
            if not isinstance(data.get(key), dict):
                raise EdgekitError(f"{where}: missing the {key!r} section")
        from edgekit.profiling.report_check import problems

        found = problems(data)
        if found:
            raise EdgekitError(f"{where} does not match the profile report schema (docs/profile-schema.md): "
                               + "; ".join(found[:5]) + (f"; and {len(found) - 5} more" if len(found) > 5 else ""))
        return cls(data)


def _write(path: str | Path, text: str) -> Path:
    """Write through a temp file and rename, so no half-written report is ever left at `path`."""
    from edgekit.errors import OutputPathError

    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(p)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)   # no half-written temp file left beside the report
        raise OutputPathError(f"cannot write {p} ({e.strerror or e}); choose a writable path") from None
    return p


def build_report(device: dict[str, Any], bundle: dict[str, Any], settings: dict[str, Any], runner: dict[str, Any],
                 results: dict[str, Any], error: str | None, complete: bool) -> ProfileReport:
    from edgekit import __version__

    return ProfileReport({
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "edgekit_version": __version__,
        "complete": complete,
        "error": error,
        "device": device,
        "bundle": bundle,
        "settings": settings,
        "runner": runner,
        "results": results,
        "regressions": None,
        "history_id": None,
    })
