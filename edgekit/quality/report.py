"""QualityReport: what `edgekit eval` prints and every export records (metadata["quality"], manifest "quality")."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class WorstWindow:
    start: int                 # index of the first scored token in the text's token stream
    tokens: int                # scored tokens
    mean_kl: float
    same_top: float
    text: str                  # the scored span, decoded


@dataclass
class QualityReport:
    mean_kl: float             # mean KL(reference || artifact) per token, nats
    same_top: float            # share of tokens whose top choice is the same
    perplexity: float          # the artifact's, on the text's next tokens
    reference_perplexity: float
    tokens: int                # scored positions
    windows: int
    window_tokens: int         # tokens fed per window (<= the artifact's max_seq_len)
    runtime: str               # what ran the artifact (its target's runtime)
    target: str
    quant: str
    text_id: str
    text_sha256: str
    reference: str             # what the reference was (the unquantized model's eager fp32 decoder, by source)
    max_kl: float = 0.0        # the largest single-token KL
    reference_information: float = 0.0   # mean KL(reference || uniform): the scale KL is judged against
    seconds: float = 0.0
    worst: list[WorstWindow] = field(default_factory=list)
    gate: dict[str, Any] | None = None    # set by the export gate: bounds and verdict

    @property
    def relative_kl(self) -> float:
        """mean KL as a share of the reference's own distance from uniform (scale-free: tiny random models too)."""
        return self.mean_kl / self.reference_information if self.reference_information > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["relative_kl"] = self.relative_kl
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QualityReport:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["worst"] = [WorstWindow(**w) for w in d.get("worst", [])]
        return cls(**known)

    def summary(self) -> str:
        return (f"KL {self.mean_kl:.4g}, same top {self.same_top:.1%}, perplexity {self.perplexity:.2f} "
                f"(reference {self.reference_perplexity:.2f}) over {self.tokens} tokens of {self.text_id}")
