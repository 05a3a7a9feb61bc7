"""Evaluation inside edgekit.export(): the model is in memory, the artifact in its temp folder; figures + gate."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from edgekit.evaldata import eval_text
from edgekit.quality import gate
from edgekit.quality.evaluate import labels, run

if TYPE_CHECKING:
    from edgekit.model.edge_model import EdgeModel
    from edgekit.targets.base import Artifact, Target, TargetSpec

log = logging.getLogger(__name__)

# What an export scores: windows spread over the whole shipped text (prose and worked problems), at most 2,048 tokens
# (8 windows of SmolLM2 at max_seq_len 512: what docs/quality.md's bounds were measured on) and at most 8 windows
# (a test model with max_seq_len 32 costs ~0.1 s, not 120 windows' 2.6 s). `edgekit eval` scores the whole text.
EXPORT_EVAL_TOKENS = 2048
EXPORT_EVAL_WINDOWS = 8


def evaluate_export(target: Target, artifact: Artifact, model: EdgeModel, spec: TargetSpec) -> dict[str, Any]:
    """Sets and returns metadata["quality"] for a fresh export; QualityError (a ParityError) when the scheme's bound is exceeded."""
    if not model.has_tokenizer:
        log.warning("%s has no tokenizer, so the export's quality on the shipped text is not measured (no gate)",
                    model.name)
        artifact.metadata["quality"] = {"skipped": f"{model.name} has no tokenizer to encode the evaluation text with"}
        return artifact.metadata["quality"]
    txt = eval_text()
    tokenizer = model.tokenizer
    report = run(target.session(artifact), model, tokenizer.encode(txt.text), tokenizer, window=spec.max_seq_len,
                 labels=labels(artifact, txt, model, target), max_tokens=EXPORT_EVAL_TOKENS,
                 max_windows=EXPORT_EVAL_WINDOWS, worst=3, show_progress=False)
    log.info("quality of %s (%s): %s", artifact.target, spec.quant, report.summary())
    try:
        gate.check(report, spec.quant, spec.kv_cache)
    finally:   # a failed gate's figures stay with the artifact kept by keep_failed=True
        artifact.metadata["quality"] = report.to_dict()
    return artifact.metadata["quality"]
