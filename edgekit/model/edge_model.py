"""EdgeModel: config + canonical weights + tokenizer, and the export-friendly decoder built from them."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from edgekit.errors import TokenizerError
from edgekit.model.config import ModelConfig
from edgekit.model.graph import Decoder, build_decoder

if TYPE_CHECKING:
    from edgekit.model.tokenizer import Tokenizer
    from edgekit.quant.tensor import QuantizedTensor
    from edgekit.runtime.session import EagerSession

DEFAULT_MAX_SEQ_LEN = 2048


@dataclass
class EdgeModel:
    config: ModelConfig
    weights: dict[str, torch.Tensor]
    source: Path
    source_format: str                      # "hf" | "gguf"
    name: str
    generation_defaults: dict[str, Any] = field(default_factory=dict)
    # canonical weight name -> a GGUF's tensor as the file stores it (same row order as .weights); empty for HF
    source_quant: dict[str, QuantizedTensor] = field(default_factory=dict)
    _tokenizer: Tokenizer | None = None
    _tokenizer_problem: str | None = None

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            raise TokenizerError(self._tokenizer_problem or f"{self.name} has no tokenizer")
        return self._tokenizer

    @property
    def source_quant_type(self) -> str | None:
        """The GGML type holding most of a GGUF's weights (e.g. "Q4_1"); None for a Hugging Face folder."""
        return self.config.stored_dtype if self.source_format == "gguf" else None

    @property
    def has_tokenizer(self) -> bool:
        return self._tokenizer is not None

    @property
    def stop_ids(self) -> tuple[int, ...]:
        ids = list(self.config.eos_token_ids)
        if self._tokenizer is not None:
            ids += list(self._tokenizer.stop_ids)
        return tuple(dict.fromkeys(ids))

    @property
    def default_max_seq_len(self) -> int:
        return min(self.config.max_position_embeddings, DEFAULT_MAX_SEQ_LEN)

    def decoder(self, max_seq_len: int | None = None, last_logits_only: bool = False,
                dtype: torch.dtype = torch.float32) -> Decoder:
        """A fresh decoder (own KV cache) sharing this model's weight tensors."""
        return build_decoder(self.config, self.weights, max_seq_len or self.default_max_seq_len, dtype, last_logits_only)

    def session(self, max_seq_len: int | None = None, last_logits_only: bool = True) -> EagerSession:
        from edgekit.runtime.session import EagerSession

        return EagerSession(self.decoder(max_seq_len, last_logits_only))

    def generate(self, prompt: str, **options: Any):
        """Generate on the eager graph; options as edgekit.runtime.GenerationConfig fields plus chat=True/False."""
        from edgekit.runtime.generate import generate_text

        # every position's logits, so speculative decoding can verify its drafts
        return generate_text(self.session(options.pop("max_seq_len", None), last_logits_only=False), self.tokenizer,
                             prompt,
                             defaults=self.generation_defaults, stop_ids=self.stop_ids, **options)
