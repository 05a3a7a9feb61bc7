"""Chat template rendering with the same Jinja environment transformers uses for apply_chat_template.

Same sandbox, trim/lstrip settings, `tojson`, `raise_exception`, `strftime_now`, `dict`, loop controls and the
`{% generation %}` block (rendered as plain text here); `tools` and `documents` are passed as None like transformers
does, so `{% if tools is not none %}` behaves the same.
"""
from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

from edgekit.errors import TokenizerError


def _raise(message: str):
    raise TokenizerError(f"the chat template refused the messages: {message}")


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=16)
def _compile(template: str):
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(Extension):
        """`{% generation %}...{% endgeneration %}` marks assistant text for masks; rendering keeps the body."""

        tags = frozenset({"generation"})

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.globals["dict"] = dict
    try:
        return env.from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise TokenizerError(f"the chat template is not valid Jinja (line {e.lineno}: {e.message})") from None


def render(template: str, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **special: Any) -> str:
    """Render like transformers' apply_chat_template(tokenize=False); `special` = bos_token, eos_token, ..."""
    import jinja2

    try:
        return _compile(template).render(messages=messages, tools=None, documents=None,
                                         add_generation_prompt=add_generation_prompt, **special)
    except jinja2.TemplateError as e:
        raise TokenizerError(f"the chat template failed on these messages: {e}") from None
