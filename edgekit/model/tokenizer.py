"""Tokenizer: tokenizer.json (HF) through `tokenizers`, chat template rendering like transformers' apply_chat_template."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekit.errors import TokenizerError


class Tokenizer:
    def __init__(self, tokenizer_json: str, chat_template: str | None = None, bos_token: str | None = None,
                 eos_token: str | None = None, add_bos: bool = False, extra_stop_ids: tuple[int, ...] = ()):
        from tokenizers import Tokenizer as _Tok

        try:
            self._tok = _Tok.from_str(tokenizer_json)
        except Exception as e:  # tokenizers raises a bare Exception subclass from Rust
            raise TokenizerError(f"tokenizer.json could not be parsed: {e}") from None
        self.json = tokenizer_json
        self.chat_template = chat_template
        self.bos_token, self.eos_token, self.add_bos = bos_token, eos_token, add_bos
        self.bos_id = self._tok.token_to_id(bos_token) if bos_token else None
        eos_id = self._tok.token_to_id(eos_token) if eos_token else None
        self.stop_ids: tuple[int, ...] = tuple(dict.fromkeys(([eos_id] if eos_id is not None else []) + list(extra_stop_ids)))

    # ---- construction ---------------------------------------------------------------------------
    @classmethod
    def from_folder(cls, folder: Path, eos_token_ids: tuple[int, ...] = ()) -> "Tokenizer":
        path = folder / "tokenizer.json"
        if not path.exists():
            raise TokenizerError(f"no tokenizer.json in {folder}; the model loads, but generation and bundling need one")
        cfg: dict[str, Any] = {}
        if (folder / "tokenizer_config.json").exists():
            cfg = json.loads((folder / "tokenizer_config.json").read_text())
        template = cfg.get("chat_template")
        if (folder / "chat_template.jinja").exists():
            template = (folder / "chat_template.jinja").read_text()
        if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
            template = next((t["template"] for t in template if t.get("name") == "default"), template[0]["template"])
        return cls(path.read_text(), template, _tok_str(cfg.get("bos_token")), _tok_str(cfg.get("eos_token")),
                   bool(cfg.get("add_bos_token", False)), eos_token_ids)

    # ---- use ------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids = self._tok.encode(text, add_special_tokens=False).ids
        if add_special_tokens and self.add_bos and self.bos_id is not None:
            ids = [self.bos_id] + ids
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if not self.chat_template:
            raise TokenizerError("this model has no chat template; pass a plain prompt (without --chat)")
        from edgekit.model.chat_template import render

        return render(self.chat_template, messages, add_generation_prompt,
                      bos_token=self.bos_token or "", eos_token=self.eos_token or "")

    def save(self, folder: Path) -> list[str]:
        """Write tokenizer.json (+ chat_template.jinja); returns the file names written."""
        (folder / "tokenizer.json").write_text(self.json)
        written = ["tokenizer.json"]
        if self.chat_template:
            (folder / "chat_template.jinja").write_text(self.chat_template)
            written.append("chat_template.jinja")
        return written


def _tok_str(v: Any) -> str | None:
    if isinstance(v, dict):
        return v.get("content")
    return v
