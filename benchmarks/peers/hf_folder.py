"""An HF folder holding exactly the weights edgekit's eager fp32 reference computes with, for the peers that read HF.

    python benchmarks/peers/hf_folder.py MODEL OUT      # MODEL: a built-in name or checkpoint edgekit loads

optimum-executorch and onnxruntime-genai's builder take an HF folder, the embedded default is a GGUF, and transformers
refuses to save a model it loaded from a GGUF. So the folder is written from edgekit's load (the file's blocks
dequantized exactly, llama.cpp's q/k permutation undone): float32 safetensors under Hugging Face names, config.json
from the model's config, the tokenizer and chat template edgekit reads from the file. `check_folder` loads it back
with transformers and compares its logits with edgekit's eager graph, so a peer's quality row measures the peer, not
a conversion.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HF_ARCH = {"llama": ("LlamaForCausalLM", "llama"), "qwen2": ("Qwen2ForCausalLM", "qwen2"),
           "qwen3": ("Qwen3ForCausalLM", "qwen3")}


def hf_config(model) -> dict[str, Any]:
    c = model.config
    if c.family not in HF_ARCH:
        raise ValueError(f"no HF config mapping for family {c.family!r}; known: {', '.join(HF_ARCH)}")
    arch, model_type = HF_ARCH[c.family]
    cfg = {"architectures": [arch], "model_type": model_type, "vocab_size": c.vocab_size,
           "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
           "num_hidden_layers": c.num_layers, "num_attention_heads": c.num_heads,
           "num_key_value_heads": c.num_kv_heads, "head_dim": c.head_dim, "rms_norm_eps": c.rms_norm_eps,
           "rope_theta": c.rope_theta, "max_position_embeddings": c.max_position_embeddings,
           "tie_word_embeddings": c.tie_word_embeddings, "hidden_act": "silu", "torch_dtype": "float32",
           "bos_token_id": c.bos_token_id,
           "eos_token_id": list(c.eos_token_ids) if len(c.eos_token_ids) > 1 else
           (c.eos_token_ids[0] if c.eos_token_ids else None)}
    if c.family == "llama":
        cfg.update(attention_bias=c.attention_bias, mlp_bias=False)
    if c.rope_scaling is not None or c.rope_freq_factors is not None:
        raise ValueError("RoPE scaling is not mapped to an HF config here (SmolLM2 and Qwen need none)")
    return cfg


def write_folder(model, out: Path) -> Path:
    """Write `model` (an EdgeModel) as an HF folder at `out` (created; must not exist)."""
    import torch
    from safetensors.torch import save_file

    from edgekit.model.families import HF_NAMES

    out.mkdir(parents=True)
    names = {}
    for tmpl, hf in HF_NAMES.items():
        if "{i}" in tmpl:
            names.update({tmpl.format(i=i): hf.format(i=i) for i in range(model.config.num_layers)})
        else:
            names[tmpl] = hf
    tensors = {}
    for canon, w in model.weights.items():
        if canon not in names:
            raise ValueError(f"weight {canon!r} has no HF name")
        tensors[names[canon]] = w.detach().to(torch.float32).contiguous()
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_config(model), indent=2))
    model.tokenizer.save(out)
    tok = model.tokenizer
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": tok.bos_token, "eos_token": tok.eos_token,
        "add_bos_token": tok.add_bos, "model_max_length": model.config.max_position_embeddings}, indent=2))
    gen = {k: v for k, v in model.generation_defaults.items() if k in ("temperature", "top_p", "top_k")}
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": model.config.bos_token_id,
                                                            "eos_token_id": list(model.config.eos_token_ids),
                                                            **gen}, indent=2))
    return out


def check_folder(model, folder: Path, tokens: list[int], atol: float = 1e-3) -> float:
    """max |logit difference| between transformers on `folder` and edgekit's eager fp32 graph over `tokens`;
    ValueError beyond `atol` (the two are one float32 computation apart)."""
    import torch
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(folder), torch_dtype=torch.float32).eval()
    ids = torch.tensor([tokens], dtype=torch.long)
    with torch.no_grad():
        theirs = hf(ids).logits[0]
        ours = model.decoder(max_seq_len=len(tokens), last_logits_only=False)(ids, torch.arange(len(tokens)))[0]
    diff = float((theirs - ours).abs().max())
    if diff > atol:
        raise ValueError(f"the HF folder {folder} computes other logits than edgekit's eager graph (max |diff| "
                         f"{diff:.3g} > {atol})")
    return diff


def main(argv: list[str]) -> int:
    import edgekit

    model = edgekit.load(argv[0])
    out = write_folder(model, Path(argv[1]))
    diff = check_folder(model, out, model.tokenizer.encode("The capital of France is Paris, and 12 * 7 = 84."))
    print(f"wrote {out} (max |logit diff| vs edgekit eager: {diff:.2e})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
