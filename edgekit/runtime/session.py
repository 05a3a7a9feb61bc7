"""What a Session is (the protocol every target's runtime implements and generation drives), and the eager PyTorch
Session: the reference every exported artifact is compared against."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from edgekit.model.graph import Decoder


@runtime_checkable
class Session(Protocol):
    """Runs an artifact (or the eager graph) one forward at a time; the KV cache lives inside."""

    max_seq_len: int
    last_logits_only: bool

    def reset(self) -> None: ...

    def forward(self, tokens: np.ndarray, input_pos: np.ndarray) -> np.ndarray:
        """tokens int64[1,T], input_pos int64[T] -> float32 logits [1,T,vocab] ([1,1,vocab] if last_logits_only)."""
        ...


class EagerSession:
    def __init__(self, decoder: Decoder):
        self.decoder = decoder
        self.max_seq_len = decoder.max_seq_len
        self.last_logits_only = decoder.last_logits_only

    def reset(self) -> None:
        self.decoder.reset_cache()

    @torch.no_grad()
    def forward(self, tokens: np.ndarray, input_pos: np.ndarray) -> np.ndarray:
        out = self.decoder(torch.as_tensor(np.asarray(tokens, dtype=np.int64)),
                           torch.as_tensor(np.asarray(input_pos, dtype=np.int64)))
        return out.float().numpy()


def positions(start: int, count: int) -> np.ndarray:
    return np.arange(start, start + count, dtype=np.int64)
