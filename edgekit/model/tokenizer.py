"""Tokenizer: tokenizer.json (HF) or GGUF vocabulary through `tokenizers`, chat templates like apply_chat_template.

Encoding follows transformers' semantics: `add_special_tokens=True` applies the post-processor, which adds BOS/EOS
when the checkpoint asks for it: tokenizer.json's own post-processor for HF folders (transformers 5 ignores
tokenizer_config's add_bos_token when tokenizer.json exists), or GGUF `add_bos_token` / `add_eos_token`, rebuilt
the way transformers' `update_post_processor` does. A GGUF tokenizer is rebuilt the way transformers'
GGUF integration builds it (byte-level BPE or sentencepiece BPE, control tokens special, user-defined added), except
where that differs from llama.cpp, the tokenizer GGUF files are made for: control tokens outside the byte alphabet
(DeepSeek-R1's <｜User｜>), SmolLM's digit split, Llama 3's ignore_merges (tests/data holds llama.cpp's ids).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekit.errors import TokenizerError

REASONING_TAGS = ("<think>", "</think>")


class Tokenizer:
    def __init__(self, tokenizer_json: str, chat_template: str | None = None, bos_token: str | None = None,
                 eos_token: str | None = None, add_bos: bool | None = None, extra_stop_ids: tuple[int, ...] = (),
                 add_eos: bool | None = None, unk_token: str | None = None, pad_token: str | None = None):
        from tokenizers import Tokenizer as _Tok

        try:
            self._tok = _Tok.from_str(tokenizer_json)
        except Exception as e:  # noqa: BLE001 (tokenizers raises a bare Exception from Rust)
            raise TokenizerError(f"tokenizer.json could not be parsed: {e}") from None
        self.chat_template = chat_template
        self.bos_token, self.eos_token = bos_token, eos_token
        self.unk_token, self.pad_token = unk_token, pad_token
        self.bos_id = self._tok.token_to_id(bos_token) if bos_token else None
        eos_id = self._tok.token_to_id(eos_token) if eos_token else None
        if add_bos is not None or add_eos is not None or self._tok.post_processor is None:
            self._set_post_processor(bool(add_bos), bool(add_eos), eos_id)
            tokenizer_json = self._tok.to_str()
        self.add_bos = bool(add_bos) if add_bos is not None else self._adds_bos()
        self.json = tokenizer_json
        self._hidden_ids: set[int] | None = None
        self.stop_ids: tuple[int, ...] = tuple(dict.fromkeys(([eos_id] if eos_id is not None else []) + list(extra_stop_ids)))

    def _set_post_processor(self, add_bos: bool, add_eos: bool, eos_id: int | None) -> None:
        """transformers' TokenizersBackend.update_post_processor: BOS/EOS around the sequence as asked."""
        from tokenizers import processors

        add_bos = add_bos and self.bos_id is not None
        add_eos = add_eos and eos_id is not None
        single = f"{(self.bos_token + ':0 ') if add_bos else ''}$A:0{(' ' + self.eos_token + ':0') if add_eos else ''}"
        pair = (f"{single}{(' ' + self.bos_token + ':1') if add_bos else ''} $B:1"
                f"{(' ' + self.eos_token + ':1') if add_eos else ''}")
        special = ([(self.bos_token, self.bos_id)] if add_bos else []) + ([(self.eos_token, eos_id)] if add_eos else [])
        self._tok.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=special)

    def _adds_bos(self) -> bool:
        if self.bos_id is None:
            return False
        probe = self._tok.encode("a", add_special_tokens=True).ids
        return bool(probe) and probe[0] == self.bos_id

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def from_folder(cls, folder: Path, eos_token_ids: tuple[int, ...] = ()) -> Tokenizer:
        path = folder / "tokenizer.json"
        if not path.exists():
            raise TokenizerError(f"no tokenizer.json in {folder}; the model loads, but generation and bundling need one")
        cfg: dict[str, Any] = {}
        if (folder / "tokenizer_config.json").exists():
            try:
                cfg = json.loads((folder / "tokenizer_config.json").read_text())
            except ValueError as e:
                raise TokenizerError(f"{folder / 'tokenizer_config.json'} is not valid JSON ({e})") from None
        template = cfg.get("chat_template")
        if (folder / "chat_template.jinja").exists():
            template = (folder / "chat_template.jinja").read_text()
        if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
            template = next((t["template"] for t in template if t.get("name") == "default"), template[0]["template"])
        # like transformers 5: with a tokenizer.json, its post-processor decides BOS/EOS (add_bos_token is ignored)
        return cls(path.read_text(), template, _tok_str(cfg.get("bos_token")), _tok_str(cfg.get("eos_token")),
                   None, eos_token_ids, None, _tok_str(cfg.get("unk_token")), _tok_str(cfg.get("pad_token")))

    @classmethod
    def from_gguf(cls, meta: dict[str, Any], eos_token_ids: tuple[int, ...] = ()) -> Tokenizer:
        """From GGUF metadata (`tokenizer.ggml.*`, `tokenizer.chat_template`), giving llama.cpp's ids."""
        tokens = meta.get("tokenizer.ggml.tokens")
        if not tokens:
            raise TokenizerError("the GGUF file has no tokenizer.ggml.tokens; the model loads, but generation and "
                                 "bundling need a tokenizer")
        kind = meta.get("tokenizer.ggml.model")
        backend = _gguf_backend(meta)  # raises TokenizerError naming the supported tokenizer models

        def special(key: str) -> str | None:  # as the vocabulary spells it, so that it maps back to the file's id
            i = meta.get(f"tokenizer.ggml.{key}")
            return backend.id_to_token(i) if i is not None and 0 <= i < len(tokens) else None

        add_bos = meta.get("tokenizer.ggml.add_bos_token")
        if add_bos is None and (kind == "llama" or meta.get("tokenizer.ggml.pre") in GGUF_LLAMA3_STYLE_PRES):
            add_bos = True  # llama.cpp's default for a sentencepiece vocabulary, and for Llama 3 style ones
        # end-of-turn / end-of-message ids stop generation too (llama.cpp's llama_vocab_is_eog)
        stops = tuple(eos_token_ids) + tuple(int(meta[k]) for k in _GGUF_EOG_KEYS if meta.get(k) is not None)
        return cls(backend.to_str(), meta.get("tokenizer.chat_template"), special("bos_token_id"),
                   special("eos_token_id"), bool(add_bos), tuple(dict.fromkeys(stops)),
                   bool(meta.get("tokenizer.ggml.add_eos_token", False)), special("unknown_token_id"),
                   special("padding_token_id"))

    # ---- use ------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`; add_special_tokens=True adds BOS/EOS when transformers' tokenizer would, except that
        BOS is not added to a text that already starts with it (a rendered chat whose template writes
        {{ bos_token }}, as DeepSeek-R1's does): two BOS in a row is a prompt the model never saw in training."""
        ids = self._tok.encode(text, add_special_tokens=add_special_tokens).ids
        if (add_special_tokens and self.add_bos and self.bos_token and text.startswith(self.bos_token)
                and ids[:2] == [self.bos_id, self.bos_id]):
            del ids[0]
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def decode_text(self, ids: list[int]) -> str:
        """The text a user sees: special tokens dropped, except the reasoning tags <think> / </think>, which some
        tokenizers mark special but the runtime needs to split reasoning from the answer."""
        if self._hidden_ids is None:
            keep = {self._tok.token_to_id(t) for t in REASONING_TAGS}
            self._hidden_ids = {i for i, t in self._tok.get_added_tokens_decoder().items() if t.special} - keep
        return self._tok.decode([i for i in ids if i not in self._hidden_ids], skip_special_tokens=False)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if not self.chat_template:
            raise TokenizerError("this model has no chat template; pass a plain prompt (without --chat)")
        from edgekit.model.chat_template import render

        special = {k: v for k, v in (("bos_token", self.bos_token), ("eos_token", self.eos_token),
                                     ("unk_token", self.unk_token), ("pad_token", self.pad_token)) if v is not None}
        return render(self.chat_template, messages, add_generation_prompt, **special)

    def save(self, folder: Path) -> list[str]:
        """Write tokenizer.json (+ chat_template.jinja); returns the file names written."""
        (folder / "tokenizer.json").write_text(compact_json(self.json))
        written = ["tokenizer.json"]
        if self.chat_template:
            (folder / "chat_template.jinja").write_text(self.chat_template)
            written.append("chat_template.jinja")
        return written

    def save_with_config(self, folder: Path) -> list[str]:
        """save() plus a tokenizer_config.json (what transformers' and swift-transformers' AutoTokenizer read);
        a tokenizer_config.json already in the folder (a runtime's own form: onnxruntime-genai's) is kept. Returns
        the file names. Written by every export, so an artifact carries its tokenizer and bundling needs no
        checkpoint."""
        files = self.save(folder)
        if not (folder / "tokenizer_config.json").exists():
            config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": self.bos_token,
                      "eos_token": self.eos_token, "add_bos_token": self.add_bos, "chat_template": self.chat_template,
                      "model_max_length": None}
            (folder / "tokenizer_config.json").write_text(
                json.dumps({k: v for k, v in config.items() if v is not None}, indent=2), encoding="utf-8")
        return [*files, "tokenizer_config.json"]


def compact_json(tokenizer_json: str) -> str:
    """tokenizer.json with BPE merges as "a b" strings instead of ["a", "b"] pairs (tokenizers' earlier form, which
    it, transformers and onnxruntime-genai all read): 4 bytes less per merge, 0.2 MB for a 49k-merge vocabulary, the
    difference between an artifact at a GGUF's size and one above it. Kept as pairs if any merged token has a space
    (the string form could not be split back)."""
    doc = json.loads(tokenizer_json)
    merges = (doc.get("model") or {}).get("merges")
    if not merges or not all(isinstance(m, list) and len(m) == 2 for m in merges):
        return tokenizer_json
    if any(" " in a or " " in b for a, b in merges):
        return tokenizer_json
    doc["model"]["merges"] = [f"{a} {b}" for a, b in merges]
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def _tok_str(v: Any) -> str | None:
    if isinstance(v, dict):
        return v.get("content")
    return v


# ---- GGUF vocabularies, rebuilt the way transformers' integrations/gguf/gguf_tokenizer_mapping.py does --------------
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN35_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_TEKKEN_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
                 r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
                 r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_GPT4O_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
                r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# tokenizer.ggml.pre -> the split regex its merges were learned with (llama.cpp's regex for that pre-tokenizer type)
GGUF_PRE_SPLITS = {
    **dict.fromkeys(("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                     "jina-v5-nano", "dbrx", "smaug-bpe"), _LLAMA3_SPLIT),
    "tekken": _TEKKEN_SPLIT,
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez"), _QWEN2_SPLIT),
    "qwen35": _QWEN35_SPLIT,
    **dict.fromkeys(("gpt-4o", "llama4", "kanana2", "talkie", "minimax-m2"), _GPT4O_SPLIT),
}
# pre-tokenizers whose split is GPT-2's own regex (tokenizers' ByteLevel default), and those that first cut every digit
# apart (llama.cpp's "smollm", as SmolLM2's tokenizer.json does with Digits): without that cut "  99" is
# [Ġ, Ġ, 9, 9] instead of llama.cpp's [ĠĠ, 9, 9] (transformers' GGUF loader misses it)
GGUF_GPT2_REGEX_PRES = ("gpt-2", "gpt2")  # llama.cpp's name; and the one transformers' and edgekit's test writers use
GGUF_DIGITS_THEN_GPT2_PRES = ("smollm",)
GGUF_TOKENIZER_MODELS = ("gpt2", "llama")
# llama.cpp sets ignore_merges (a word that is a whole vocabulary entry is that token, whatever the merges would make:
# Llama 3's tokenizer.json has "ignore_merges": true) and defaults add_bos to true for these (llama-vocab.cpp)
GGUF_LLAMA3_STYLE_PRES = ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                          "jina-v5-nano", "tekken")
_CONTROL, _USER_DEFINED = 3, 4
# the special ids a GGUF names; the end-of-generation ones among them (besides EOS) also stop generation
_GGUF_NAMED_KEYS = ("bos_token_id", "eos_token_id", "eot_token_id", "eom_token_id", "unknown_token_id",
                    "padding_token_id")
_GGUF_EOG_KEYS = ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")


def supported_gguf_pre_tokenizers() -> list[str]:
    """The tokenizer.ggml.pre values a byte-level ("gpt2") GGUF vocabulary may name: each mapped to the split llama.cpp
    uses for it (llama-vocab.cpp); deepseek-r1-qwen, smollm, gpt-2 and llama-bpe are checked against llama.cpp's ids
    in tests/core/test_gguf_r1_header.py and test_gguf_smollm_ids.py."""
    return sorted({*GGUF_GPT2_REGEX_PRES, *GGUF_DIGITS_THEN_GPT2_PRES, *GGUF_PRE_SPLITS})


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (the byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def _gguf_backend(meta: dict[str, Any]):
    """A `tokenizers.Tokenizer` for this GGUF metadata: transformers' build, with llama.cpp's choices where they
    differ (see the module docstring)."""
    kind = meta.get("tokenizer.ggml.model")
    if kind == "gpt2":
        _check_pre(meta.get("tokenizer.ggml.pre"))
        tok = _byte_level_bpe(meta)
    elif kind == "llama":
        tok = _sentencepiece_bpe(meta)
    else:
        raise TokenizerError(f"GGUF tokenizer model {kind!r} is not supported; supported: "
                             f"{', '.join(GGUF_TOKENIZER_MODELS)} (the model loads, generation needs a tokenizer)")
    _add_special_tokens(tok, meta)
    pre = meta.get("tokenizer.ggml.pre") if kind == "gpt2" else None
    split = GGUF_PRE_SPLITS.get(pre)
    if split is not None:
        from tokenizers import Regex, pre_tokenizers

        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    elif pre in GGUF_DIGITS_THEN_GPT2_PRES:
        from tokenizers import pre_tokenizers

        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return tok


def _check_pre(pre: Any) -> None:
    """A byte-level vocabulary's split regex decides its tokens; one we cannot reproduce is an error, not a guess
    (GPT-2's regex on a vocabulary learned with another gives other ids, silently). A sentencepiece ("llama")
    vocabulary has no split regex, so its pre is not checked, as llama.cpp ignores it."""
    if pre not in supported_gguf_pre_tokenizers():
        raise TokenizerError(f"GGUF pre-tokenizer (tokenizer.ggml.pre) {pre!r} is not supported for a byte-level "
                             f"(gpt2) vocabulary; supported: {', '.join(supported_gguf_pre_tokenizers())}; "
                             "sentencepiece (llama) vocabularies need none (the model loads, generation needs a "
                             "tokenizer)")


def _merges(meta: dict[str, Any], vocab: dict[str, int]) -> list[tuple[str, str]]:
    if meta.get("tokenizer.ggml.merges"):
        return [tuple(m.split(" ")) for m in meta["tokenizer.ggml.merges"]]  # type: ignore[misc]
    scores = meta.get("tokenizer.ggml.scores")
    if not scores:
        raise TokenizerError("the GGUF tokenizer has neither merges nor scores to derive them from")
    return _merges_from_scores(vocab, dict(zip(meta["tokenizer.ggml.tokens"], scores)))


def _merges_from_scores(vocab: dict[str, int], scores: dict[str, float]) -> list[tuple[str, str]]:
    """transformers' generate_merges: every split of a token into two vocabulary pieces, best score first."""
    merges = []
    for merge, score in scores.items():
        local = [(merge[:i], merge[i:], score) for i in range(1, len(merge)) if merge[:i] in vocab and merge[i:] in vocab]
        merges.extend(sorted(local, key=lambda x: (vocab[x[0]], vocab[x[1]])))
    merges.sort(key=lambda v: (v[2], len(v[0]), len(v[1])), reverse=True)
    return [(a, b) for a, b, _ in merges]


def _byte_level_bpe(meta: dict[str, Any]):
    from tokenizers import Tokenizer as _Tok
    from tokenizers import decoders, models, pre_tokenizers

    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    types = meta.get("tokenizer.ggml.token_type") or ()
    # control and user-defined tokens stay as written (llama.cpp matches them in the raw text and decodes them as
    # is), even outside the byte alphabet: DeepSeek-R1's <｜User｜> (fullwidth bars) is one token, id 151644;
    # ordinary tokens are byte-spelled already, a stray one gets respelled
    raw = {i for i, kind in enumerate(types) if kind in (_CONTROL, _USER_DEFINED)}
    vocab = {t if i in raw or set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i
             for i, t in enumerate(meta["tokenizer.ggml.tokens"])}
    tok = _Tok(models.BPE(vocab=vocab, merges=_merges(meta, vocab), dropout=None, continuing_subword_prefix="",
                          end_of_word_suffix="", fuse_unk=False,
                          ignore_merges=meta.get("tokenizer.ggml.pre") in GGUF_LLAMA3_STYLE_PRES))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def _sentencepiece_bpe(meta: dict[str, Any]):
    """transformers' LlamaTokenizer (legacy=False) over the file's vocabulary, with the space before the first word
    when the file asks for it (tokenizer.ggml.add_space_prefix: true for Llama 2 style vocabularies, false for
    Gemma's, as llama.cpp reads it)."""
    from tokenizers import Tokenizer as _Tok
    from tokenizers import decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(meta["tokenizer.ggml.tokens"])}
    tok = _Tok(models.BPE(vocab=vocab, merges=_merges(meta, vocab), fuse_unk=True, byte_fallback=True, dropout=None))
    prefix = bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first" if prefix else "never",
                                                 split=False)
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    tok.decoder = decoders.Sequence(steps + ([decoders.Strip(content=" ", left=1)] if prefix else []))
    return tok


def _add_special_tokens(tok, meta: dict[str, Any]) -> None:
    """Control tokens (and the named bos/eos/eot/unk/pad) become special, user-defined ones (<think>) added tokens,
    each under its own id: an added token spelled like a vocabulary entry takes that entry's id, and every one here is
    (for a byte-level vocabulary, _byte_level_bpe keeps their spelling), so none lands past the embedding table."""
    from tokenizers import AddedToken

    tokens, types = meta["tokenizer.ggml.tokens"], meta.get("tokenizer.ggml.token_type") or ()
    named = [meta[f"tokenizer.ggml.{k}"] for k in _GGUF_NAMED_KEYS
             if meta.get(f"tokenizer.ggml.{k}") is not None and 0 <= meta[f"tokenizer.ggml.{k}"] < len(tokens)]
    special = list(dict.fromkeys([i for i, kind in enumerate(types) if kind == _CONTROL] + named))
    user = [i for i, kind in enumerate(types) if kind == _USER_DEFINED and i not in special]
    spelled = {i: tok.id_to_token(i) for i in special + user}  # the vocabulary's spelling of each
    if special:
        tok.add_special_tokens([AddedToken(spelled[i], normalized=False, special=True) for i in special
                                if spelled[i] is not None])
    if user:
        tok.add_tokens([AddedToken(spelled[i], normalized=False, special=False) for i in user
                        if spelled[i] is not None])
    moved = [(tokens[i], i, spelled[i] and tok.token_to_id(spelled[i])) for i in special + user
             if spelled[i] is None or tok.token_to_id(spelled[i]) != i]
    if moved:  # a duplicate spelling: the vocabulary keeps one id for it, the other id could never be produced
        raise TokenizerError(f"the GGUF vocabulary spells {len(moved)} special token(s) like another entry, e.g. "
                             f"{moved[:3]} (token, id in the file, id it would get); accepted: one spelling per id")
