"""Chat template rendering with the same Jinja environment transformers uses for apply_chat_template."""
from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

from edgekit.errors import TokenizerError


def _raise(message: str):
    raise TokenizerError(f"the chat template refused the messages: {message}")


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=16)
def _compile(template: str):
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def render(template: str, messages: list[dict[str, str]], add_generation_prompt: bool = True, **special: str) -> str:
    return _compile(template).render(messages=messages, add_generation_prompt=add_generation_prompt, **special)
