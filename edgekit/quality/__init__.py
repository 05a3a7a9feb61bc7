"""Quality of an export: KL / same top token / perplexity against the unquantized model, and the export gate."""
from edgekit.quality.report import QualityReport, WorstWindow


def evaluate(*args, **kwargs) -> QualityReport:
    """See edgekit.quality.evaluate.evaluate (imported on use: it needs torch)."""
    from edgekit.quality.evaluate import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


__all__ = ["QualityReport", "WorstWindow", "evaluate"]
