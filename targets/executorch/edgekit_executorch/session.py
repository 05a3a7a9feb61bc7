"""The host Session: a thin wrapper over standalone_session.py, plus profile() for per-op timings."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import RefusedFileError
from edgekit.targets.base import Artifact
from edgekit_executorch import standalone_session


class ExecuTorchSession:
    def __init__(self, artifact: Artifact, threads: int | None = None, profile_dir: str | Path | None = None):
        self.artifact = artifact
        self.threads = threads
        self._impl = self._open(profile_dir)
        self.max_seq_len = self._impl.max_seq_len
        self.last_logits_only = self._impl.last_logits_only

    def _open(self, profile_dir: str | Path | None) -> standalone_session.PteSession:
        doc = {"files": self.artifact.files, "metadata": self.artifact.metadata}
        try:
            return standalone_session.PteSession(self.artifact.path, threads=self.threads, profile_dir=profile_dir,
                                                 doc=doc)
        except standalone_session.RefusedFileError as e:
            raise RefusedFileError(f"{self.artifact.path}: {e}") from e

    def reset(self) -> None:
        self._impl.reset()

    def forward(self, tokens: np.ndarray, input_pos: np.ndarray) -> np.ndarray:
        return self._impl.forward(tokens, input_pos)

    def op_profile(self) -> list[dict[str, Any]]:
        return self._impl.op_profile()

    def profile(self, prompt: list[int] | None = None, decode_steps: int = 8,
                profile_dir: str | Path | None = None) -> list[dict[str, Any]]:
        """Prefill `prompt` then `decode_steps` greedy steps under ETDump; per-op rows {name, op_type, calls, total_ms}."""
        prompt = prompt or [1 + i % 100 for i in range(16)]
        if len(prompt) + decode_steps > self.max_seq_len:
            raise ValueError(f"prompt ({len(prompt)}) + decode_steps ({decode_steps}) exceed max_seq_len {self.max_seq_len}")
        with tempfile.TemporaryDirectory(prefix="edgekit-etdump-") as tmp:
            sess = self._open(profile_dir or tmp)
            logits = sess.forward(np.asarray([prompt], dtype=np.int64), np.arange(len(prompt), dtype=np.int64))
            for i in range(decode_steps):
                tok = int(logits[0, -1].argmax())
                logits = sess.forward(np.asarray([[tok]], dtype=np.int64), np.asarray([len(prompt) + i], dtype=np.int64))
            return sess.op_profile()
