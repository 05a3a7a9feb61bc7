"""edgekit.evaluate(): an artifact or bundle, run in its own runtime, against the unquantized model on real text."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from edgekit.errors import EvaluationError
from edgekit.evaldata import EvalText, eval_text
from edgekit.quality.measure import measure
from edgekit.quality.report import QualityReport

if TYPE_CHECKING:
    from edgekit.model.edge_model import EdgeModel
    from edgekit.targets.base import Artifact

log = logging.getLogger(__name__)


def evaluate(artifact_or_bundle: Any, reference: EdgeModel | str | Path | None = None,
             text: EvalText | str | Path | None = None, *, max_tokens: int | None = None, worst: int = 3,
             session: Any = None, show_progress: bool | None = None) -> QualityReport:
    """Mean KL(reference || artifact) per token, same top token, both perplexities and the worst windows.

    `artifact_or_bundle`: an Artifact, a Bundle, or the path of an artifact folder / bundle folder / bundle .zip; it
    runs in its own target's Session (pass `session=` to reuse one). `reference`: the unquantized model (EdgeModel or
    checkpoint path); by default the checkpoint the export recorded. `text`: the shipped eval set by default, a str
    (the text itself), a Path (a UTF-8 file) or an EvalText. `max_tokens` caps the scored tokens (windows spread over
    the whole text).
    """
    art, bundle = _open(artifact_or_bundle)
    model = _reference_model(art, reference)
    tokenizer = bundle.tokenizer if bundle is not None else model.tokenizer
    txt = resolve_text(text)
    tokens = tokenizer.encode(txt.text)
    if session is None:
        session = bundle.session() if bundle is not None else _target(art).session(art)
    window = int(art.metadata.get("max_seq_len") or session.max_seq_len)
    return run(session, model, tokens, tokenizer, window=window, labels=labels(art, txt, model),
               max_tokens=max_tokens, worst=worst, show_progress=show_progress)


def run(session: Any, model: EdgeModel, tokens: list[int], tokenizer: Any, *, window: int, labels: dict[str, str],
        max_tokens: int | None, worst: int, show_progress: bool | None, max_windows: int | None = None) -> QualityReport:
    from edgekit.quality.bar import window_bar

    reference = model.decoder(window, last_logits_only=False, dtype=torch.float32)
    with window_bar(f"evaluate {labels['target']} ({labels['quant']})", show_progress) as tick:
        return measure(session, reference, tokens, tokenizer, window=window, max_tokens=max_tokens,
                       max_windows=max_windows, worst=worst, labels=labels, on_window=tick)


def labels(art: Artifact, txt: EvalText, model: EdgeModel, target: Any = None) -> dict[str, str]:
    from edgekit.bundling.facts import target_entry

    md = art.metadata
    return {"runtime": target_entry(target or _target(art), md)["runtime"], "target": art.target,
            "quant": str(md.get("quant", "?")), "text_id": txt.id, "text_sha256": txt.sha256,
            "reference": f"{model.name} ({Path(str(model.source)).name}), eager fp32"}


def resolve_text(text: EvalText | str | Path | None) -> EvalText:
    if text is None:
        return eval_text()
    if isinstance(text, EvalText):
        return text
    if isinstance(text, Path):
        try:
            return EvalText(text.name, text.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise EvaluationError(f"cannot read the evaluation text {str(text)!r} ({e}); give a readable UTF-8 "
                                  "text file") from None
    if isinstance(text, str):
        return EvalText("text", text)
    raise EvaluationError(f"text={type(text).__name__} is not accepted; give a str (the text), a Path (a UTF-8 file), "
                          "an edgekit.evaldata.EvalText, or None (the shipped eval set)")


def _target(art: Artifact):
    from edgekit.targets.registry import get_target

    return get_target(art.target)


def _open(obj: Any) -> tuple[Artifact, Any]:
    from edgekit.bundling.reader import Bundle
    from edgekit.targets.base import ARTIFACT_META, Artifact

    if isinstance(obj, Bundle):
        return obj.artifact, obj
    if isinstance(obj, Artifact):
        return obj, None
    if isinstance(obj, (str, Path)):
        p = Path(obj)
        if (p / ARTIFACT_META).is_file():
            return Artifact.load(p), None
        if p.is_file() and p.suffix == ".zip" or (p / "manifest.json").is_file():
            b = Bundle.open(p)
            return b.artifact, b
        raise EvaluationError(f"{str(p)!r} is neither an artifact folder ({ARTIFACT_META}) nor a bundle (folder with "
                              "manifest.json, or .zip); give what `edgekit export` or `edgekit bundle` wrote")
    raise EvaluationError(f"cannot evaluate a {type(obj).__name__}; give an Artifact, a Bundle or a path to one")


def _reference_model(art: Artifact, reference: EdgeModel | str | Path | None) -> EdgeModel:
    from edgekit.model.edge_model import EdgeModel
    from edgekit.model.load import load

    if isinstance(reference, EdgeModel):
        model = reference
    elif reference is not None:
        model = load(reference, dtype=torch.float32)
    else:
        model = load(recorded_checkpoint(art), dtype=torch.float32)
    vocab = art.metadata.get("vocab_size")
    if vocab is not None and int(vocab) != model.config.vocab_size:
        raise EvaluationError(f"the reference {model.name} has a vocabulary of {model.config.vocab_size} tokens but "
                              f"the artifact's is {vocab}; give the checkpoint it was exported from (--reference)")
    return model


def recorded_checkpoint(art: Artifact) -> Path:
    """The checkpoint the export recorded, if it is still here unchanged; EvaluationError naming --reference if not."""
    from edgekit.hashing import file_sha256

    facts = art.metadata.get("model", {})
    src = facts.get("source")
    if not src or not Path(src).exists():
        raise EvaluationError(f"the artifact at {art.path} records its checkpoint as {src!r}, which is not on this "
                              "host; give the unquantized model with --reference CHECKPOINT (reference=)")
    path = Path(src)
    if path.is_file() and facts.get("source_sha256") and file_sha256(path) != facts["source_sha256"]:
        raise EvaluationError(f"{path} changed since the artifact at {art.path} was exported (sha256 differs); give "
                              "the checkpoint it was exported from with --reference CHECKPOINT (reference=)")
    return path
