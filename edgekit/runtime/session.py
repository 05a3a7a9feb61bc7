"""The eager PyTorch Session: the reference every exported artifact is compared against."""
from __future__ import annotations

import numpy as np
import torch

from edgekit.model.graph import Decoder


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
