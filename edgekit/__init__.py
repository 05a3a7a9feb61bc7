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


def evaluate(artifact_or_bundle, reference=None, text=None, **options):
    """KL / same top token / perplexity of an artifact or bundle against the unquantized model on real text; see
    edgekit.quality.evaluate.evaluate."""
    from edgekit.quality.evaluate import evaluate as _evaluate

    return _evaluate(artifact_or_bundle, reference=reference, text=text, **options)


def __getattr__(name: str):
    # edgekit.bundle (callable: edgekit.bundle(model, target=...)) and edgekit.Bundle, imported on first use
    if name in ("bundle", "Bundle"):
        import importlib

        mod = importlib.import_module("edgekit.bundle")
        return mod if name == "bundle" else mod.Bundle
    # edgekit.profile (callable: edgekit.profile(bundle, device)) and edgekit.ProfileReport, imported on first use
    if name in ("profile", "ProfileReport"):
        import importlib

        mod = importlib.import_module("edgekit.profile")
        return mod if name == "profile" else mod.ProfileReport
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")


__all__ = ["Bundle", "EdgeModel", "EdgekitError", "ModelConfig", "ProfileReport", "__version__", "bundle", "evaluate",
           "export",
           "get_target", "load", "profile", "targets"]
