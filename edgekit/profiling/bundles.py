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
    path: Path                    # the bundle folder (a .zip is unpacked by edgekit.bundling)
    source: Path                  # what the user gave
    manifest: dict[str, Any]
    manifest_sha256: str
    kind: str                     # "bundle" (manifest.json) | "artifact" (artifact.json, an export folder)
    opened: Any = None            # the verified edgekit.bundling.Bundle, for bundles

    @property
    def target(self) -> str:
        return self.manifest["target"]["name"] if self.kind == "bundle" else self.manifest["target"]

    def require_target(self) -> None:
        """UnknownTarget (listing the installed ones) unless this bundle's target plugin is installed."""
        from edgekit.targets.registry import get_target

        get_target(self.target)

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
    """Open and verify a bundle folder/.zip (edgekit.bundling.Bundle.open: pin, paths, every file's hash), or an
    exported artifact folder (its recorded file hashes, where it has them)."""
    source = Path(path)
    if not source.exists():
        raise BundleError(f"{source} does not exist; give a bundle folder or .zip (edgekit bundle ...)")
    if source.is_dir() and not (source / "manifest.json").exists():
        meta = source / "artifact.json"
        if not meta.exists():
            raise BundleError(f"{source} holds neither manifest.json (a bundle) nor artifact.json (an export)")
        from edgekit.bundling.artifact_files import check_unchanged
        from edgekit.targets.base import Artifact

        raw = meta.read_bytes()
        check_unchanged(Artifact.load(source))
        return BundleRef(source, source, json.loads(raw), hashlib.sha256(raw).hexdigest(), "artifact")
    from edgekit.bundling import Bundle

    b = Bundle.open(source, check_target=check_target)
    raw = (b.path / "manifest.json").read_bytes()
    return BundleRef(b.path, source, b.manifest, hashlib.sha256(raw).hexdigest(), "bundle", b)


def shipped_session(ref: BundleRef) -> str | None:
    """The bundle-relative name of the standalone session the bundle ships (verified like every file), if any:
    the manifest's `runner.file`, else a `standalone_session.py` among its hashed files. Never for an artifact
    folder, whose hashes cover only the artifact's own files."""
    if ref.kind != "bundle":
        return None
    runner = ref.manifest.get("runner") or {}
    if runner.get("file"):
        return runner["file"]   # checked by verify: relative, inside the bundle, a hashed entry of `files`
    return STANDALONE if STANDALONE in ref.manifest["files"] else None


def standalone_module(ref: BundleRef, override: str | Path | None = None) -> Path:
    """The standalone_session.py to run or push: `override` (the user's --session-module), else the bundle's own
    hashed copy (shipped_session), else the installed target's (Target.standalone_session())."""
    if override:
        p = Path(override).expanduser()
        if not p.is_file():
            raise DeviceError(f"session module {p} does not exist")
        return p
    shipped = shipped_session(ref)
    if shipped is not None:
        return ref.path / shipped
    from edgekit.targets.registry import get_target

    target = get_target(ref.target)
    fn = getattr(target, "standalone_session", None)
    found = fn() if fn else None
    if not found:
        raise DeviceError(f"target {ref.target!r} provides no standalone session, so its bundles cannot run on a "
                          "board through edgekit's runner; use --device local or an adb runner binary")
    return Path(found)


def load_session_module(ref: BundleRef, override: str | Path | None = None) -> Any:
    """Import the module standalone_module() names. The bundle's own copy is imported from bytes read once and
    checked against the manifest's sha256 at that moment, so a file swapped after verification never runs."""
    import importlib.util
    import sys
    import types

    path = standalone_module(ref, override)
    name = f"edgekit_standalone_{ref.target}"
    shipped = None if override else shipped_session(ref)
    if shipped is None:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    entry = ref.manifest["files"].get(shipped)
    if entry is None:   # verify refuses this; kept for a manifest edited after it was opened
        raise BundleError(f"the bundle's session {shipped!r} is not a hashed entry of its manifest; refused")
    data = path.read_bytes()
    want = entry["sha256"]
    if hashlib.sha256(data).hexdigest() != want:
        raise BundleError(f"{path} changed after the bundle was verified (sha256 differs from the manifest); "
                          "refused; re-bundle it or restore the file")
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module   # dataclasses and pickling look the module up by name
    exec(compile(data, str(path), "exec"), module.__dict__)  # noqa: S102 - the verified bytes, nothing else
    return module
