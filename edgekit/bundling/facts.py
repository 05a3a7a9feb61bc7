"""Manifest entries derived from an artifact's metadata and its target (no target-specific knowledge here)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgekit.model.tokenizer import Tokenizer
    from edgekit.targets.base import Target

GENERATION_DEFAULTS = {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "max_new_tokens": 256}


def model_entry(md: dict[str, Any], tok: Tokenizer) -> dict[str, Any]:
    facts = dict(md.get("model", {}))
    source = facts.get("source")
    facts["source"] = Path(source).name if source else "unknown"  # the file name, not this host's path
    facts.setdefault("vocab_size", md.get("vocab_size", tok.vocab_size))
    facts.setdefault("name", "model")
    facts.setdefault("family", "unknown")
    facts.setdefault("parameters", 0)
    facts.setdefault("source_sha256", None)
    return facts


def _attr(obj: Any, name: str) -> Any:
    v = getattr(obj, name, None)
    return v() if callable(v) else v


def target_entry(tgt: Target, md: dict[str, Any]) -> dict[str, Any]:
    """name, platform, runtime, runtime_version, min_os: the artifact's metadata first (`runtime`, `runtime_version`,
    `min_os`), then the target's attributes of those names, then metadata conventions (`built_with_<runtime>`:
    version; `min_<runtime>`: oldest runtime; other `min_<os>` keys: minimum OS versions)."""
    built = {k[len("built_with_"):]: v for k, v in md.items() if k.startswith("built_with_")}
    runtime = md.get("runtime") or _attr(tgt, "runtime") or next(iter(built), None) or tgt.name
    version = md.get("runtime_version") or _attr(tgt, "runtime_version") or built.get(runtime)
    mins = {k[len("min_"):]: v for k, v in sorted(md.items())
            if k.startswith("min_") and k != "min_os" and isinstance(v, (int, float, str))}
    min_runtime = mins.pop(runtime, None)
    min_os = md.get("min_os") or _attr(tgt, "min_os") or ", ".join(f"{k} {v}" for k, v in mins.items())
    return {"name": tgt.name, "aliases": list(tgt.aliases), "platform": tgt.platform, "runtime": str(runtime),
            "runtime_version": None if version is None else str(version),
            "min_runtime_version": None if min_runtime is None else str(min_runtime), "min_os": min_os or None}


def io_signature(md: dict[str, Any]) -> dict[str, Any]:
    """The target's own IO description (`io` in the artifact metadata) as is; else the contract's signature."""
    given = md.get("io")
    if isinstance(given, dict) and given:
        return dict(given)
    last = bool(md.get("last_logits_only", False))
    vocab = md.get("vocab_size") or md.get("model", {}).get("vocab_size")
    return {"inputs": {"tokens": "int64[1,T]", "input_pos": "int64[T]"},
            "outputs": {"logits": f"float32[1,{1 if last else 'T'},{vocab}]"}}


def generation_settings(defaults: dict[str, Any]) -> dict[str, Any]:
    gen = {**GENERATION_DEFAULTS, **{k: v for k, v in defaults.items() if v is not None}}
    if gen.get("do_sample") is False:
        gen["temperature"] = 0.0
    return gen


_SENTINEL = "\x00EDGEKIT_USER_MESSAGE\x00"


def chat_format(tok: Tokenizer) -> dict[str, str] | None:
    """The chat template rendered around one user message, split into the text before and after it, for apps
    with no Jinja engine (Android): prompt = before + user text + after."""
    if not tok.chat_template:
        return None
    from jinja2 import TemplateError

    from edgekit.errors import EdgekitError

    try:
        text = tok.apply_chat_template([{"role": "user", "content": _SENTINEL}], add_generation_prompt=True)
    except (EdgekitError, TemplateError, TypeError, ValueError):  # a template wanting more: apps render it
        return None
    if text.count(_SENTINEL) != 1:
        return None
    before, after = text.split(_SENTINEL)
    return {"before": before, "after": after}
