"""Text that ships with edgekit: the held-out evaluation set and a separate calibration text (see README.md)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).parent
# the evaluation set, in this order; calibration/ is kept apart so calibrating on it never sees the eval text
EVAL_FILES = ("prose_memory.txt", "prose_software.txt", "arithmetic.txt", "reasoning.txt")
CALIBRATION_FILE = "calibration/calibration.txt"
SEPARATOR = "\n\n"


@dataclass(frozen=True)
class EvalText:
    """A text to evaluate on: its id (a file name, or "edgekit-eval"), the text and the sha256 of its UTF-8 bytes."""

    id: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def eval_text() -> EvalText:
    """The shipped evaluation set: English technical prose and worked arithmetic / reasoning, one string."""
    return EvalText("edgekit-eval", SEPARATOR.join((HERE / f).read_text(encoding="utf-8").strip() for f in EVAL_FILES))


def calibration_text() -> EvalText:
    """The shipped calibration text (3,944 SmolLM2 tokens), disjoint from the evaluation set."""
    return EvalText("edgekit-calibration", (HERE / CALIBRATION_FILE).read_text(encoding="utf-8").strip())


def speculation_prompts() -> dict[str, list[dict[str, str]]]:
    """Chat prompts for measuring speculative decoding: "grounded" ones whose answer restates its input (rewrite,
    extract, fix, continue, reformat, rename) and "open_ended" controls; each {"id", "kind", "prompt"}."""
    import json

    return json.loads((HERE / "speculation" / "prompts.json").read_text(encoding="utf-8"))
