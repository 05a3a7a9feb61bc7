"""edgekit: export small reasoning models to phones and edge boards, bundle them for apps, profile them on devices."""
from __future__ import annotations

import logging

from edgekit.errors import EdgekitError
from edgekit.model import EdgeModel, ModelConfig, load
from edgekit.targets.registry import get_target, targets

__version__ = "0.1.0"
logging.getLogger(__name__).addHandler(logging.NullHandler())


def export(model, target: str, **spec):
    """Export `model` (EdgeModel or path/name) for `target`; see edgekit.export_api.export."""
    from edgekit.export_api import export as _export

    return _export(model, target, **spec)


__all__ = ["EdgeModel", "EdgekitError", "ModelConfig", "__version__", "export", "get_target", "load", "targets"]
