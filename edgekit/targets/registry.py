"""Target discovery through the `edgekit.targets` entry-point group. Unknown names fail loudly."""
from __future__ import annotations

import logging
from functools import cache
from importlib.metadata import entry_points

from edgekit.errors import UnknownTarget
from edgekit.targets.base import Target

log = logging.getLogger(__name__)
GROUP = "edgekit.targets"


# entry-point name -> why its plugin could not be loaded (one broken plugin must not hide the others)
BROKEN: dict[str, str] = {}


def load_plugins() -> dict[str, Target]:
    """Load every plugin of the entry-point group (uncached); failures go to BROKEN."""
    found: dict[str, Target] = {}
    for ep in entry_points(group=GROUP):
        try:
            obj = ep.load()  # loads only the plugin's light module; heavy imports happen inside its methods
            target = obj() if isinstance(obj, type) else obj  # a Target class or a ready instance
        except Exception as e:  # noqa: BLE001  (a plugin's bug or missing dependency: reported where its name is asked for)
            BROKEN[ep.name] = f"{type(e).__name__}: {e}"
            log.warning("target plugin %r (%s) failed to load: %s", ep.name, ep.value, BROKEN[ep.name])
            continue
        if target.name in found:
            raise RuntimeError(f"two plugins register the target name {target.name!r}")
        found[target.name] = target
    return found


_installed = cache(load_plugins)


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
    if key in BROKEN:
        raise UnknownTarget(f"target {name!r} is installed but its plugin failed to load ({BROKEN[key]}); "
                            f"working: {installed}")
    raise UnknownTarget(f"unknown target {name!r}; installed: {installed}")
