"""The settings document a runner is given: the profile's settings plus the speculation prompts as token ids."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgekit.profiling.bundles import BundleRef
    from edgekit.profiling.settings import Settings


def runner_settings(ref: BundleRef, settings: Settings) -> dict[str, Any]:
    """The settings the runner gets: the profile's, plus the speculation prompts as token ids (the device has no
    tokenizer), rendered with the bundle's chat template (plain text for a base model)."""
    doc = settings.as_dict()
    if settings.speculate == "off":
        return doc
    try:
        tok, stop_ids = _tokenizer(ref)
    except Exception as e:  # noqa: BLE001 - the timed runs stay valid without the speculation figures
        doc["speculation_unavailable"] = f"the bundle's tokenizer could not be read ({type(e).__name__}: {e})"
        return doc
    from edgekit.evaldata import speculation_prompts

    prompts = []
    for kind, items in speculation_prompts().items():
        for item in items:
            text = (tok.apply_chat_template([{"role": "user", "content": item["prompt"]}]) if tok.chat_template
                    else item["prompt"])
            prompts.append({"id": item["id"], "kind": kind,
                            "ids": tok.encode(text, add_special_tokens=not tok.chat_template)})
    doc.update(speculation_prompts=prompts, stop_ids=list(stop_ids), speculation_tokens=settings.decode_tokens)
    return doc


def _tokenizer(ref: BundleRef) -> tuple[Any, tuple[int, ...]]:
    if ref.opened is not None:
        return ref.opened.tokenizer, ref.opened.stop_ids
    from edgekit.model.tokenizer import Tokenizer

    tok = Tokenizer.from_folder(ref.path)
    return tok, tok.stop_ids
