"""What a profile measures (prompt lengths, decode tokens, runs ...), checked before any device work."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from edgekit.errors import ProfileSettingError


@dataclass(frozen=True)
class Settings:
    prompt_lengths: tuple[int, ...] = (64, 256, 1024)
    decode_tokens: int = 128
    runs: int = 3
    warmup: int = 1
    threads: int | None = None
    seed: int = 0
    op_profile: bool = True
    timeout_s: float = 1800.0
    # after the timed runs: the shipped prompt set (edgekit/evaldata/speculation) decoded plainly and with
    # speculation, decode_tokens each, where the bundle returns every position's logits
    speculate: str = "ngram"

    def __post_init__(self) -> None:
        bad = [n for n in self.prompt_lengths if n < 1]
        if not self.prompt_lengths or bad:
            raise ProfileSettingError(f"prompt lengths must be positive integers, got {list(self.prompt_lengths)}")
        if self.decode_tokens < 1 or self.runs < 1 or self.warmup < 0:
            raise ProfileSettingError(f"need decode_tokens >= 1, runs >= 1, warmup >= 0; got {self.decode_tokens}, "
                                      f"{self.runs}, {self.warmup}")
        if self.threads is not None and self.threads < 1:
            raise ProfileSettingError(f"threads must be at least 1 (or unset for the runtime's default), got "
                                      f"{self.threads}")
        if self.speculate not in ("ngram", "off"):
            raise ProfileSettingError(f"speculate={self.speculate!r}; accepted: ngram, off")
        if not self.timeout_s > 0:
            raise ProfileSettingError(f"timeout must be a positive number of seconds, got {self.timeout_s}")

    def check_fits(self, max_seq_len: int | None, where: str) -> None:
        """Every prompt plus its decoded tokens must fit the bundle's KV cache: measuring fewer lengths than asked
        and calling the run complete would be a silent wrong result, so refuse before any device work."""
        if not max_seq_len:
            return
        too_long = [n for n in self.prompt_lengths if n + self.decode_tokens > int(max_seq_len)]
        if too_long:
            fits = int(max_seq_len) - self.decode_tokens
            raise ProfileSettingError(
                f"{where} holds {max_seq_len} tokens, but prompt length(s) {too_long} + {self.decode_tokens} decode "
                f"tokens need more; use prompt lengths of at most {fits} (or fewer decode tokens), or export with a "
                "larger max_seq_len")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["prompt_lengths"] = list(self.prompt_lengths)
        return d

    def key(self) -> str:
        """What must match for two runs to be comparable (timeout does not change the numbers)."""
        d = self.as_dict()
        d.pop("timeout_s")
        return json.dumps(d, sort_keys=True)
