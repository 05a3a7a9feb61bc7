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


def bundle(*args, **kwargs):
    """Bundle an artifact (or export and bundle a model) for an app; see edgekit.bundling.build.bundle."""
    from edgekit.bundling.build import bundle as _bundle

    return _bundle(*args, **kwargs)


def profile(*args, **kwargs):
    """Profile a bundle on a device; see edgekit.profiling.profile."""
    from edgekit.profiling import profile as _profile

    return _profile(*args, **kwargs)


def __getattr__(name: str):
    # the bundle and profile classes (and their subpackages) on first use: `import edgekit` stays light
    import importlib

    if name in ("Bundle", "bundling"):
        mod = importlib.import_module("edgekit.bundling")
        return mod if name == "bundling" else mod.Bundle
    if name in ("ProfileReport", "ProfileInterrupted", "profiling"):
        mod = importlib.import_module("edgekit.profiling")
        return mod if name == "profiling" else getattr(mod, name)
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")


__all__ = ["Bundle", "EdgeModel", "EdgekitError", "ModelConfig", "ProfileInterrupted", "ProfileReport", "__version__", "bundle", "evaluate",
           "export",
           "get_target", "load", "profile", "targets"]
