"""Tiny random checkpoints of the real architectures, built with transformers and saved with save_pretrained."""
from __future__ import annotations

from pathlib import Path

import torch

TEMPLATE_CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                   "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

_CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "def add(a, b):\n    return a + b\n\nclass Point:\n    x: int\n    y: int\n",
    "Édition spéciale: naïve café, 東京, Grüße — emoji 🙂 and tabs\tand   runs of spaces.",
    "Let me think step by step. First, 12 * 7 = 84. Then 84 + 16 = 100. The answer is 100.",
    "<think>reasoning goes here</think> The final answer follows after the reasoning block.",
]


def make_tokenizer(out: Path, vocab_size: int = 512, chat_template: str = TEMPLATE_CHATML,
                   specials: tuple[str, ...] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"),
                   eos: str = "<|im_end|>", bos: str | None = None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_CORPUS * 4, trainer)
    ft = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=specials[0], bos_token=bos)
    ft.chat_template = chat_template
    ft.save_pretrained(out)
    return ft


def make_checkpoint(out: Path, family: str, *, vocab_size: int = 512, hidden: int = 64, layers: int = 2,
                    heads: int = 4, kv_heads: int = 2, intermediate: int = 160, tied: bool | None = None,
                    max_pos: int = 512, shard_size: str | None = None, seed: int = 0, rope_scaling: bool = False,
                    with_tokenizer: bool = True, sliding_window: int = 6, global_every: int = 3,
                    query_pre_attn_scalar: int | None = None) -> Path:
    """Write a random checkpoint of `family` ("llama" | "qwen2" | "qwen3" | "gemma3") to `out`; returns `out`.
    gemma3: every `global_every`-th layer global (the real model: every 6th), the others sliding with a window of
    `sliding_window`, query_pre_attn_scalar head_dim + 8 unless given, so each quirk is exercised."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    common = {"vocab_size": vocab_size, "hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
                  "num_attention_heads": heads, "num_key_value_heads": kv_heads, "max_position_embeddings": max_pos,
                  "rms_norm_eps": 1e-6, "eos_token_id": 2, "bos_token_id": None}
    if family == "llama":
        extra = {"rope_theta": 10000.0}
        if rope_scaling:
            extra["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
        cfg, cls = LlamaConfig(**common, tie_word_embeddings=bool(tied), **extra), LlamaForCausalLM
    elif family == "qwen2":
        cfg, cls = Qwen2Config(**common, tie_word_embeddings=bool(tied), rope_theta=1e6), Qwen2ForCausalLM
    elif family == "qwen3":
        cfg, cls = Qwen3Config(**common, head_dim=hidden // heads, tie_word_embeddings=tied is not False,
                               rope_theta=1e6), Qwen3ForCausalLM
    elif family == "gemma3":
        from transformers import Gemma3ForCausalLM, Gemma3TextConfig

        types = ["full_attention" if (i + 1) % global_every == 0 else "sliding_attention" for i in range(layers)]
        cfg = Gemma3TextConfig(**common, head_dim=hidden // heads, query_pre_attn_scalar=query_pre_attn_scalar or hidden // heads + 8,
                               sliding_window=sliding_window, layer_types=types,
                               rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                                "full_attention": {"rope_type": "default", "rope_theta": 1e6}})
        cls = Gemma3ForCausalLM
    else:
        raise ValueError(family)
    model = cls(cfg).eval()
    with torch.no_grad():  # random norms and biases, so parity tests exercise them
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    kwargs = {"max_shard_size": shard_size} if shard_size else {}
    model.save_pretrained(out, **kwargs)
    if with_tokenizer:
        make_tokenizer(out, vocab_size=vocab_size)
    return out
