#!/usr/bin/env python3
"""Chat with an edgekit IoT bundle using only onnxruntime, tokenizers and numpy (no edgekit, no jinja2).

    pip install onnxruntime tokenizers numpy
    python chat.py path/to/bundle                      # interactive chat
    python chat.py path/to/bundle --prompt "Hi" --temperature 0 --max-new-tokens 64

Everything model-specific comes from the bundle's manifest.json: the file names, the cache layout (io), max_seq_len,
the stop token ids, the chat format and the generation defaults. Each question is answered on its own (no history).
A bundle made with `edgekit bundle --all-logits` carries edgekit's speculative decoding loop (edgekit_speculate.py,
numpy only); this sample then uses it, unless --speculate off.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


# edgekit-readme:begin (this part is copied into every IoT bundle's README.md)
def bundle_file(folder: Path, rel: str) -> Path:
    """folder/rel, only if it resolves (symlinks included) to a file inside the bundle: a manifest naming anything
    else (an absolute path, ../) is refused before a native library or model from there is loaded."""
    root = folder.resolve()
    path = (root / rel).resolve()
    if os.path.isabs(rel) or root not in path.parents or not path.is_file():
        raise ValueError(f"the manifest names {rel!r}, which is not a file inside the bundle {root}; not loading it")
    return path


class BundleModel:
    """The bundle's ONNX model with its KV cache: one preallocated buffer per layer and K/V, bound as both the
    past input and the present output (GroupQueryAttention appends the new positions in place)."""

    def __init__(self, folder: Path, threads: int = 0):
        self.manifest = json.loads((folder / "manifest.json").read_text())
        io = self.manifest["io"]
        self.max_seq_len = self.manifest["max_seq_len"]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        libs = [bundle_file(folder, lib) for lib in self.manifest["artifact"]["metadata"]["custom_op_libraries"]]
        main = bundle_file(folder, self.manifest["artifact"]["main"])
        for lib in libs:  # edgekit's kernels, when used
            opts.register_custom_ops_library(str(lib))
        self.session = ort.InferenceSession(str(main), opts, providers=["CPUExecutionProvider"])
        dtype = np.float16 if io["cache_dtype"] == "float16" else np.float32
        shape = [1, io["kv_heads"], self.max_seq_len, io["head_dim"]]
        self.binding = self.session.io_binding()
        self.logits_name = io.get("logits", "logits")
        self.binding.bind_output(self.logits_name, "cpu")  # bound first: get_outputs()[0]
        self.cache = []  # keep the buffers alive
        for layer in range(io["layers"]):
            for past, present in ((io["past_key"], io["present_key"]), (io["past_value"], io["present_value"])):
                buf = ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, "cpu", 0)
                self.binding.bind_ortvalue_input(past % layer, buf)
                self.binding.bind_ortvalue_output(present % layer, buf)
                self.cache.append(buf)
        self.length = 0

    def forward(self, ids: list[int]) -> np.ndarray:
        """Feed `ids` at the next positions; the last position's logits."""
        return self.forward_rows(ids)[0, -1]

    def forward_rows(self, ids: list[int]) -> np.ndarray:
        """Feed `ids` at positions length, length + 1, ...; the logits the model returns ([1, T or 1, vocab])."""
        total = self.length + len(ids)
        self.binding.bind_cpu_input("input_ids", np.asarray([ids], dtype=np.int64))
        self.binding.bind_cpu_input("attention_mask", np.ones((1, total), dtype=np.int64))
        # rebound each call (its place stays first): every position's logits take T rows, the last shape would stick
        self.binding.bind_output(self.logits_name, "cpu")
        self.session.run_with_iobinding(self.binding)
        self.length = total
        return self.binding.get_outputs()[0].numpy()


def generate(model: BundleModel, tokenizer: Tokenizer, prompt_ids: list[int], max_new_tokens: int,
             temperature: float, top_k: int, top_p: float, rng: np.random.Generator):
    """Yield (token id, new text) pieces until a stop token, max_new_tokens or max_seq_len."""
    stop_ids = set(model.manifest["tokenizer"]["stop_ids"])
    model.length = 0  # a fresh cache: positions past `length` are never read
    logits = model.forward(prompt_ids)
    out: list[int] = []
    shown = ""
    for _ in range(max_new_tokens):
        tok = sample(logits, temperature, top_k, top_p, rng)
        if tok in stop_ids:
            return
        out.append(tok)
        text = tokenizer.decode(out, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # wait for a whole UTF-8 character
            yield tok, ""
        else:
            yield tok, text[len(shown):]
            shown = text
        if model.length >= model.max_seq_len:
            return
        logits = model.forward([tok])
# edgekit-readme:end


class SpeculationSession:
    """The session contract edgekit_speculate.decode drives: forward(tokens, input_pos) at a write position at or
    before the cached length (GroupQueryAttention writes at the mask's length, so rejected drafts are written over)."""

    last_logits_only = False

    def __init__(self, model: BundleModel):
        self.model, self.max_seq_len = model, model.max_seq_len

    def reset(self) -> None:
        self.model.length = 0

    def forward(self, tokens: np.ndarray, input_pos: np.ndarray) -> np.ndarray:
        self.model.length = int(input_pos[0])
        return self.model.forward_rows([int(t) for t in tokens[0]])


def load_speculation(folder: Path, manifest: dict):
    """The bundle's edgekit_speculate module, or None (a bundle returning only the last position's logits)."""
    name = (manifest.get("runner") or {}).get("speculate_file")
    if not name or manifest.get("last_logits_only", True):
        return None
    spec = importlib.util.spec_from_file_location("edgekit_speculate", bundle_file(folder, name))
    module = importlib.util.module_from_spec(spec)
    sys.modules["edgekit_speculate"] = module   # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def generate_speculative(speculate, model: BundleModel, tokenizer: Tokenizer, prompt_ids: list[int],
                         max_new_tokens: int, temperature: float, top_k: int, top_p: float,
                         rng: np.random.Generator, on_piece):
    """Like generate(), through edgekit's loop: drafts from the text so far, verified several per forward where
    that pays; each token is still one draw from the model (greedy: plain greedy's tokens)."""
    stop_ids = set(model.manifest["tokenizer"]["stop_ids"])
    session = SpeculationSession(model)
    session.reset()
    logits = session.forward(np.asarray([prompt_ids]), np.arange(len(prompt_ids)))[0, -1]
    out: list[int] = []
    shown = [""]

    def pick(row: np.ndarray) -> int:
        return sample(row, temperature, top_k, top_p, rng)

    def emit(tok: int) -> str:
        if tok in stop_ids:
            return "stop_token"
        out.append(tok)
        text = tokenizer.decode(out, skip_special_tokens=True)
        if not text.endswith("\ufffd"):   # wait for a whole UTF-8 character
            on_piece(tok, text[len(shown[0]):])
            shown[0] = text
        return "max_new_tokens" if len(out) >= max_new_tokens else ""

    stats = speculate.decode(session, pick(logits), len(prompt_ids), pick, emit,
                             room=lambda: max_new_tokens - len(out), history=prompt_ids)
    return out, stats.as_dict(max(len(out) - 1, 0))


def sample(logits: np.ndarray, temperature: float, top_k: int, top_p: float, rng: np.random.Generator) -> int:
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    if 0 < top_k < z.size:
        z[z < np.partition(z, -top_k)[-top_k]] = -np.inf
    p = np.exp(z - z.max())
    p /= p.sum()
    if 0 < top_p < 1:
        order = np.argsort(-p)
        keep = order[: int(np.searchsorted(np.cumsum(p[order]), top_p)) + 1]
        q = np.zeros_like(p)
        q[keep] = p[keep]
        p = q / q.sum()
    return int(rng.choice(p.size, p=p))


def prompt_ids(manifest: dict, tokenizer: Tokenizer, text: str, chat: bool) -> list[int]:
    tk = manifest["tokenizer"]
    if chat and tk.get("chat_format"):
        return tokenizer.encode(tk["chat_format"]["before"] + text + tk["chat_format"]["after"],
                                add_special_tokens=False).ids
    ids = tokenizer.encode(text, add_special_tokens=False).ids
    return ([tk["bos_id"]] if tk.get("add_bos") and tk.get("bos_id") is not None else []) + ids


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--prompt", help="Answer this one prompt and exit (default: interactive).")
    ap.add_argument("--raw", action="store_true", help="Do not apply the chat format.")
    ap.add_argument("--max-new-tokens", type=int)
    ap.add_argument("--temperature", type=float)
    ap.add_argument("--top-k", type=int)
    ap.add_argument("--top-p", type=float)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--ids-json", action="store_true", help="Print the generated token ids as JSON at the end.")
    ap.add_argument("--speculate", choices=("ngram", "off"), default="ngram",
                    help="Speculative decoding where the bundle carries it (default ngram).")
    args = ap.parse_args()

    model = BundleModel(args.bundle, args.threads)
    m = model.manifest
    tokenizer = Tokenizer.from_file(str(args.bundle / m["tokenizer"]["file"]))
    gen = m["generation"]
    settings = {"max_new_tokens": args.max_new_tokens or gen["max_new_tokens"],
                "temperature": gen["temperature"] if args.temperature is None else args.temperature,
                "top_k": gen["top_k"] if args.top_k is None else args.top_k,
                "top_p": gen["top_p"] if args.top_p is None else args.top_p}
    rng = np.random.default_rng(args.seed)
    prompts = [args.prompt] if args.prompt is not None else iter(lambda: input("> "), "")
    speculate = load_speculation(args.bundle, m) if args.speculate == "ngram" else None
    for text in prompts:
        ids: list[int] = []
        stats = None
        if speculate is not None:
            ids, stats = generate_speculative(speculate, model, tokenizer, prompt_ids(m, tokenizer, text, not args.raw),
                                       rng=rng, on_piece=lambda _tok, piece: print(piece, end="", flush=True),
                                       **settings)
        else:
            for tok, piece in generate(model, tokenizer, prompt_ids(m, tokenizer, text, not args.raw), rng=rng,
                                       **settings):
                ids.append(tok)
                print(piece, end="", flush=True)
        print()
        if args.ids_json:
            print(json.dumps({"ids": ids, **({"speculation": stats} if stats else {})}))


if __name__ == "__main__":
    try:
        main()
    except (EOFError, KeyboardInterrupt):
        sys.exit(0)
    except ValueError as e:  # a manifest naming a file outside the bundle, or a bad argument value
        sys.exit(f"chat.py: {e}")
