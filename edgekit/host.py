"""Sessions over exported artifacts on this host, for `generate --target` and bundles."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from edgekit.runtime.session import Session
from edgekit.targets.base import Artifact


def session_for(model: Any, target: str, artifact: str | Path | None = None, **options: Any) -> Session:
    """A Session over `artifact` (exported now into a temp folder if not given) with `target`'s runtime."""
    from edgekit.export_api import export
    from edgekit.targets.registry import get_target

    tgt = get_target(target)
    if artifact is None:
        out = Path(tempfile.mkdtemp(prefix="edgekit-")) / "artifact"
        art = export(model, tgt.name, out=out)   # every position's logits: speculation verifies drafts with them
    else:
        art = Artifact.load(artifact)
    return tgt.session(art, **options)
