"""Where edgekit keeps what it makes for itself (kernel builds, joined model files, unpacked bundles, run history)."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def cache_dir() -> Path:
    """$EDGEKIT_CACHE_DIR, else $XDG_CACHE_HOME/edgekit, else ~/.cache/edgekit (macOS: ~/Library/Caches/edgekit)."""
    if os.environ.get("EDGEKIT_CACHE_DIR"):
        return Path(os.environ["EDGEKIT_CACHE_DIR"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "edgekit"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "edgekit"
    return Path.home() / ".cache" / "edgekit"
