"""The host generation loop over any Session: prefill, decode, sampling, stop tokens, streaming, <think> split."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.errors import NumericalError, UnsupportedOption
from edgekit.runtime.sampling import choose
from edgekit.runtime.session import positions
from edgekit.runtime.speculate import MAX_DRAFT, MODES, decode
from edgekit.runtime.think import ThinkSplitter

if TYPE_CHECKING:
    from edgekit.model.tokenizer import Tokenizer
    from edgekit.runtime.session import Session

StreamFn = Callable[[str, str], None]  # (kind: "reasoning" | "answer", text)


@dataclass
class GenerationConfig:
    max_new_tokens: int = 128
    temperature: float = 0.0          # 0 = greedy
    top_k: int = 0                    # 0 = off
    top_p: float = 1.0                # 1 = off
    seed: int | None = None
    stop_ids: tuple[int, ...] = ()
    prefill_chunk: int | None = None  # feed long prompts in chunks of this many tokens
    # "ngram": draft from the text so far and verify in one forward where the session's measured costs say it pays
    # (edgekit/runtime/speculate.py); "off": one token per forward
    speculate: str = "ngram"
    draft_tokens: int | None = None   # with speculate: always draft this many (when a match has them), no cost model

    @classmethod
    def from_options(cls, defaults: dict[str, Any] | None = None, **options: Any) -> GenerationConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(k for k in options if k not in known)
        if unknown:
            raise UnsupportedOption(f"unknown generation option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        merged: dict[str, Any] = {}
        for k, v in (defaults or {}).items():
            if k in known and k != "max_new_tokens":
                merged[k] = v
        if defaults and not defaults.get("do_sample", True):
            merged["temperature"] = 0.0
        merged.update({k: v for k, v in options.items() if v is not None})
        cfg = cls(**merged)
        if cfg.temperature < 0 or cfg.top_k < 0 or not 0 < cfg.top_p <= 1 or cfg.max_new_tokens < 1:
            raise UnsupportedOption(f"bad sampling settings temperature={cfg.temperature} top_k={cfg.top_k} "
                                    f"top_p={cfg.top_p} max_new_tokens={cfg.max_new_tokens}; accepted: temperature >= 0, "
                                    "top_k >= 0, 0 < top_p <= 1, max_new_tokens >= 1")
        if cfg.draft_tokens is not None and not 1 <= cfg.draft_tokens <= MAX_DRAFT:
            raise UnsupportedOption(f"draft_tokens={cfg.draft_tokens}; accepted: 1 to {MAX_DRAFT} (or unset: the cost "
                                    "model chooses per step)")
        if cfg.speculate not in MODES:
            raise UnsupportedOption(f"speculate={cfg.speculate!r}; accepted: {', '.join(MODES)}")
        return cfg


@dataclass
class GenerationResult:
    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    reasoning: str = ""
    answer: str = ""
    stop_reason: str = ""                 # "stop_token" | "max_new_tokens" | "max_seq_len"
    time_to_first_token_s: float = 0.0
    prefill_s: float = 0.0
    decode_s: float = 0.0
    speculation: dict[str, Any] = field(default_factory=dict)   # forwards, drafted, accepted, tokens_per_forward

    @property
    def prefill_tokens_per_s(self) -> float:
        return len(self.prompt_ids) / self.prefill_s if self.prefill_s else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        n = max(len(self.token_ids) - 1, 0)
        return n / self.decode_s if self.decode_s else 0.0


def _last_row(logits: np.ndarray) -> np.ndarray:
    return logits[0, -1]


def check_logits(row: np.ndarray, where: str) -> None:
    """NaN/Inf logits would make sampling pick token 0 (or fail later) and print an empty answer: stop instead."""
    if not np.isfinite(row).all():
        bad = int((~np.isfinite(row)).sum())
        raise NumericalError(f"the model produced {bad} non-finite logit(s) (NaN/Inf) of {row.size} at {where}; "
                             "its weights or its runtime compute garbage (check the checkpoint, or the artifact's "
                             "validation)")


def prefill(session: Session, prompt_ids: list[int], chunk: int | None = None) -> np.ndarray:
    """Run the prompt through the session; returns the last position's logits."""
    if len(prompt_ids) >= session.max_seq_len:
        raise UnsupportedOption(f"the prompt has {len(prompt_ids)} tokens; this artifact's max_seq_len is "
                                f"{session.max_seq_len}, so the prompt must be shorter")
    step = chunk or len(prompt_ids)
    logits = None
    for start in range(0, len(prompt_ids), step):
        piece = prompt_ids[start:start + step]
        logits = session.forward(np.asarray([piece], dtype=np.int64), positions(start, len(piece)))
    assert logits is not None
    return _last_row(logits)


def generate(session: Session, prompt_ids: list[int], config: GenerationConfig,
             on_token: Callable[[int], None] | None = None, drafter: Any = None) -> GenerationResult:
    """Token-level generation; the session's cache is reset first. `drafter` replaces the n-gram drafter (tests)."""
    if not prompt_ids:
        raise UnsupportedOption("the prompt is empty; give at least one token")
    rng = np.random.default_rng(config.seed)
    res = GenerationResult(prompt_ids=list(prompt_ids))
    session.reset()
    t0 = time.perf_counter()
    row = prefill(session, prompt_ids, config.prefill_chunk)
    check_logits(row, f"the prefill of {len(prompt_ids)} prompt tokens")
    res.prefill_s = time.perf_counter() - t0
    t_decode = t0

    def pick(logits_row: np.ndarray) -> int:
        return choose(logits_row, config.temperature, config.top_k, config.top_p, rng)

    def emit(tok: int) -> str:
        nonlocal t_decode
        res.token_ids.append(tok)
        if len(res.token_ids) == 1:
            res.time_to_first_token_s = time.perf_counter() - t0
            t_decode = time.perf_counter()
        if on_token is not None:
            on_token(tok)
        if tok in config.stop_ids:
            return "stop_token"
        return "max_new_tokens" if len(res.token_ids) >= config.max_new_tokens else ""

    stats = decode(session, pick(row), len(prompt_ids), pick, emit,
                   room=lambda: config.max_new_tokens - len(res.token_ids), history=prompt_ids,
                   mode=config.speculate, drafter=drafter, check=check_logits, draft_tokens=config.draft_tokens)
    res.decode_s = time.perf_counter() - t_decode
    res.stop_reason = stats.stop_reason
    res.speculation = stats.as_dict(max(len(res.token_ids) - 1, 0))
    return res


def generate_text(session: Session, tokenizer: Tokenizer, prompt: str, *, chat: bool = False,
                  system: str | None = None, stream: StreamFn | None = None, defaults: dict[str, Any] | None = None,
                  stop_ids: tuple[int, ...] = (), **options: Any) -> GenerationResult:
    """Text in, text out: chat template, streaming of decoded text, reasoning kept apart from the answer."""
    from edgekit.runtime.prompt import check_text

    check_text(prompt)
    if system is not None:
        check_text(system, "the system message")
    if chat:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    else:
        text = prompt
    ids = tokenizer.encode(text, add_special_tokens=not chat)
    cfg = GenerationConfig.from_options(defaults, **options)
    if not cfg.stop_ids:
        cfg.stop_ids = tuple(stop_ids) or tokenizer.stop_ids
    splitter = ThinkSplitter(starts_in_think=text.rstrip().endswith("<think>"))
    emitted = ""

    def on_token(_tok: int) -> None:
        nonlocal emitted
        ids_out = [t for t in result_ids if t not in cfg.stop_ids]
        full = tokenizer.decode_text(ids_out)
        if full.endswith("\ufffd"):
            return  # an incomplete UTF-8 sequence: wait for the next token
        new, emitted = full[len(emitted):], full
        for kind, piece in splitter.feed(new):
            if stream is not None:
                stream(kind, piece)

    result_ids: list[int] = []
    res = generate(session, ids, cfg, on_token=lambda t: (result_ids.append(t), on_token(t)))
    for kind, piece in splitter.flush():
        if stream is not None:
            stream(kind, piece)
    res.text = tokenizer.decode_text([t for t in res.token_ids if t not in cfg.stop_ids])
    res.reasoning, res.answer = splitter.reasoning.strip(), splitter.answer.strip()
    return res
