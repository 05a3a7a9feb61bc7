"""Target discovery through the `edgekit.targets` entry-point group. Unknown names fail loudly."""
from __future__ import annotations

import logging
from functools import cache
from importlib.metadata import entry_points

from edgekit.errors import UnknownTarget
from edgekit.targets.base import Target

log = logging.getLogger(__name__)
GROUP = "edgekit.targets"


@cache
def _installed() -> dict[str, Target]:
    found: dict[str, Target] = {}
    for ep in entry_points(group=GROUP):
        obj = ep.load()  # loads only the plugin's light module; heavy imports happen inside its methods
        target = obj() if isinstance(obj, type) else obj  # a Target class or a ready instance
        if target.name in found:
            raise RuntimeError(f"two plugins register the target name {target.name!r}")
        found[target.name] = target
    return found


def targets() -> list[Target]:
    """Every installed target, sorted by name."""
    return [t for _, t in sorted(_installed().items())]


def describe(t: Target) -> str:
    return f"{t.name} ({', '.join(t.aliases)})" if t.aliases else t.name


def get_target(name: str) -> Target:
    key = name.strip().lower()
    for t in _installed().values():
        if key == t.name or key in t.aliases:
            return t
    installed = ", ".join(describe(t) for t in targets()) or "none (pip install the edgekit-target-* packages)"
    raise UnknownTarget(f"unknown target {name!r}; installed: {installed}")
