"""Split R1-style output into reasoning (<think> ... </think>) and answer, incrementally while streaming."""
from __future__ import annotations

OPEN, CLOSE = "<think>", "</think>"


class ThinkSplitter:
    """Feed text pieces; get back (kind, text) pairs where kind is "reasoning" or "answer".

    R1-distilled templates often put the opening <think> inside the prompt, so `starts_in_think` lets the
    caller say the first tokens are already reasoning. Partial tags at a piece boundary are held back.
    """

    def __init__(self, starts_in_think: bool = False):
        self.in_think = starts_in_think
        self._pending = ""
        self.reasoning, self.answer = "", ""

    def feed(self, text: str) -> list[tuple[str, str]]:
        buf, out = self._pending + text, []
        while buf:
            tag = CLOSE if self.in_think else OPEN
            i = buf.find(tag)
            if i >= 0:
                self._emit(out, buf[:i])
                buf, self.in_think = buf[i + len(tag):], not self.in_think
                continue
            hold = _partial_suffix(buf, tag)
            self._emit(out, buf[: len(buf) - hold])
            buf = buf[len(buf) - hold:]
            break
        self._pending = buf
        return out

    def flush(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        self._emit(out, self._pending)
        self._pending = ""
        return out

    def _emit(self, out: list[tuple[str, str]], text: str) -> None:
        if not text:
            return
        kind = "reasoning" if self.in_think else "answer"
        if kind == "reasoning":
            self.reasoning += text
        else:
            self.answer += text
        out.append((kind, text))


def _partial_suffix(buf: str, tag: str) -> int:
    for n in range(min(len(tag) - 1, len(buf)), 0, -1):
        if buf.endswith(tag[:n]):
            return n
    return 0
