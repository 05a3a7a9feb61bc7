"""What the profiler needs from a bundle: its verified folder, manifest, manifest hash, and a standalone session."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import BundleError, DeviceError

STANDALONE = "standalone_session.py"


@dataclass
class BundleRef:
    path: Path                    # the bundle folder (a .zip is unpacked by edgekit.bundle)
    source: Path                  # what the user gave
    manifest: dict[str, Any]
    manifest_sha256: str
    kind: str                     # "bundle" (manifest.json) | "artifact" (artifact.json, an export folder)
    opened: Any = None            # the verified edgekit.bundle.Bundle, for bundles

    @property
    def target(self) -> str:
        return self.manifest["target"]["name"] if self.kind == "bundle" else self.manifest["target"]

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        if self.kind == "artifact":
            meta = m.get("metadata", {})
            return {"path": str(self.source), "name": self.source.name, "kind": "artifact",
                    "manifest_sha256": self.manifest_sha256, "target": self.target,
                    "quant": meta.get("quant"), "max_seq_len": meta.get("max_seq_len"), "bytes": self.bytes(),
                    "quality": quality_summary(meta.get("quality"))}
        t = m["target"]
        return {"path": str(self.source), "name": m["name"], "kind": "bundle", "manifest_sha256": self.manifest_sha256,
                "target": t["name"], "platform": t.get("platform"), "runtime": t.get("runtime"),
                "runtime_version": t.get("runtime_version"), "quant": m.get("quant"), "kv_cache": m.get("kv_cache"),
                "max_seq_len": m.get("max_seq_len"), "model": {k: m["model"].get(k) for k in
                                                               ("name", "family", "parameters", "source")},
                "bytes": self.bytes(), "quality": quality_summary(m.get("quality"))}

    def bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())


QUALITY_KEYS = ("mean_kl", "same_top", "perplexity", "reference_perplexity", "tokens", "text_id", "text_sha256",
                "runtime")


def quality_summary(q: dict[str, Any] | None) -> dict[str, Any] | None:
    """The export's quality figures (edgekit.quality) a report shows beside its speed; None when not measured."""
    if not isinstance(q, dict) or "mean_kl" not in q:
        return None
    return {k: q.get(k) for k in QUALITY_KEYS}


def open_bundle(path: str | Path, check_target: bool = False) -> BundleRef:
    """Open (and, for bundles, verify every file's hash) a bundle folder/.zip, or an exported artifact folder."""
    source = Path(path)
    if not source.exists():
        raise BundleError(f"{source} does not exist; give a bundle folder or .zip (edgekit bundle ...)")
    if source.is_dir() and not (source / "manifest.json").exists():
        meta = source / "artifact.json"
        if not meta.exists():
            raise BundleError(f"{source} holds neither manifest.json (a bundle) nor artifact.json (an export)")
        raw = meta.read_bytes()
        return BundleRef(source, source, json.loads(raw), hashlib.sha256(raw).hexdigest(), "artifact")
    from edgekit.bundle import Bundle

    b = Bundle.open(source, check_target=check_target)
    raw = (b.path / "manifest.json").read_bytes()
    return BundleRef(b.path, source, b.manifest, hashlib.sha256(raw).hexdigest(), "bundle", b)


def standalone_module(ref: BundleRef, override: str | Path | None = None) -> Path:
    """The standalone_session.py to push: `override`, else one shipped in the bundle, else the target's own."""
    if override:
        p = Path(override).expanduser()
        if not p.is_file():
            raise DeviceError(f"session module {p} does not exist")
        return p
    shipped = ref.path / STANDALONE
    if shipped.is_file():
        return shipped
    from edgekit.targets.registry import get_target

    target = get_target(ref.target)
    fn = getattr(target, "standalone_session", None)
    found = fn() if fn else None
    if not found:
        raise DeviceError(f"target {ref.target!r} provides no standalone session, so its bundles cannot run on a "
                          "board through edgekit's runner; use --device local or an adb runner binary")
    return Path(found)
