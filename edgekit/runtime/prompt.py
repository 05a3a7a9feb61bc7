"""Prompt text checks: the tokenizer takes UTF-8 text only, so anything else is named before it is reached."""
from __future__ import annotations

from edgekit.errors import PromptError


def check_text(text: object, what: str = "the prompt") -> str:
    """`text` if it is a str that encodes as UTF-8; else PromptError naming the first bad character's position.

    A command line argument that is not UTF-8 reaches Python with each bad byte as a lone surrogate U+DC80..U+DCFF
    (surrogateescape): those are reported as the byte they stand for."""
    if not isinstance(text, str):
        raise PromptError(f"{what} must be text (str), got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        code = ord(text[e.start])
        at = f"byte offset {len(text[:e.start].encode('utf-8'))} (character {e.start})"
        if 0xDC80 <= code <= 0xDCFF:
            bad = f"byte 0x{code - 0xDC00:02x} at {at} is not valid UTF-8"
        else:
            bad = f"a lone surrogate U+{code:04X} at {at} is not a Unicode character"
        raise PromptError(f"{what} cannot be tokenized: {bad}; give UTF-8 text (re-encode the file or terminal "
                          "input as UTF-8)") from None
    return text
