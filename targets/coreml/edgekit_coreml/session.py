"""Sessions over a Core ML artifact: Core ML with an MLState on macOS, the numpy ML-program evaluator elsewhere."""
from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.errors import UnsupportedOption

if TYPE_CHECKING:
    from edgekit.targets.base import Artifact

log = logging.getLogger(__name__)
RUNTIMES = ("auto", "coreml", "evaluator")


class _Base:
    def __init__(self, artifact: Artifact):
        meta = artifact.metadata
        self.max_seq_len = int(meta["max_seq_len"])
        self.last_logits_only = bool(meta.get("last_logits_only", False))
        self.path = Path(artifact.path) / artifact.files[0]

    def _inputs(self, tokens: np.ndarray, input_pos: np.ndarray) -> dict[str, np.ndarray]:
        tokens = np.asarray(tokens, dtype=np.int64).reshape(1, -1)
        pos = np.asarray(input_pos, dtype=np.int64).reshape(-1)
        t = tokens.shape[1]
        if not 1 <= t <= self.max_seq_len - 1:
            raise UnsupportedOption(f"{t} tokens in one call; this model accepts 1..{self.max_seq_len - 1}")
        if pos.shape[0] != t or (t > 1 and not (np.diff(pos) == 1).all()):
            raise UnsupportedOption("input_pos must hold T consecutive positions (the cache is written as one slice)")
        if pos[0] < 0 or pos[-1] >= self.max_seq_len:
            raise UnsupportedOption(f"positions {pos[0]}..{pos[-1]} are outside the cache: 0..{self.max_seq_len - 1}")
        return {"tokens": tokens.astype(np.int32), "input_pos": pos.astype(np.int32)}


class EvaluatorSession(_Base):
    """Runs the saved ML program with the numpy evaluator: slow, for correctness checks only (not Core ML speed)."""

    runtime = "evaluator"

    def __init__(self, artifact: Artifact):
        from edgekit_coreml.mil.program import MILProgram

        super().__init__(artifact)
        log.warning("Core ML cannot run on %s: running %s with edgekit's numpy ML-program evaluator "
                    "(slow, for correctness only; speed says nothing about a device)", platform.system(), self.path.name)
        self.program = MILProgram(self.path)

    def reset(self) -> None:
        self.program.reset()

    def forward(self, tokens: np.ndarray, input_pos: np.ndarray) -> np.ndarray:
        return self.program.run(self._inputs(tokens, input_pos))["logits"].astype(np.float32)


class CoreMLSession(_Base):
    """Core ML's own runtime with an MLState holding the KV cache (macOS 15+)."""

    runtime = "coreml"

    def __init__(self, artifact: Artifact, compute_units: str = "ALL"):
        import coremltools as ct

        super().__init__(artifact)
        units = getattr(ct.ComputeUnit, compute_units.upper(), None)
        if units is None:
            raise UnsupportedOption(f"compute_units {compute_units!r}; accepted: ALL, CPU_ONLY, CPU_AND_GPU, CPU_AND_NE")
        self.model = ct.models.MLModel(str(self.path), compute_units=units)
        self.state = self.model.make_state()

    def reset(self) -> None:
        self.state = self.model.make_state()

    def forward(self, tokens: np.ndarray, input_pos: np.ndarray) -> np.ndarray:
        out = self.model.predict(self._inputs(tokens, input_pos), state=self.state)
        return np.asarray(out["logits"], dtype=np.float32)


def open_session(artifact: Artifact, runtime: str = "auto", **options: Any):
    """`runtime`: "coreml" (macOS only), "evaluator" (anywhere), "auto" (Core ML on macOS, else the evaluator)."""
    if runtime not in RUNTIMES:
        raise UnsupportedOption(f"runtime {runtime!r}; accepted: {', '.join(RUNTIMES)}")
    on_mac = platform.system() == "Darwin"
    if runtime == "coreml" and not on_mac:
        raise UnsupportedOption(f"Core ML runs on macOS / iOS only, not {platform.system()}; use runtime='evaluator'")
    if runtime == "coreml" or (runtime == "auto" and on_mac):
        return CoreMLSession(artifact, **options)
    return EvaluatorSession(artifact)
