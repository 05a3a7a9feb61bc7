"""Per-family tables: source tensor names -> canonical names, and each family's quirks as data.

Canonical names follow gpt-fast: tok_embeddings, layers.{i}.attention.wq ..., feed_forward.w1/w2/w3, norm, output.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from edgekit.errors import UnsupportedArchitecture

# canonical name template -> Hugging Face name template ({i} is the layer index)
HF_NAMES: dict[str, str] = {
    "tok_embeddings.weight": "model.embed_tokens.weight",
    "norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "layers.{i}.attention_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "layers.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "layers.{i}.attention.wq.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "layers.{i}.attention.wk.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "layers.{i}.attention.wv.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "layers.{i}.attention.wo.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "layers.{i}.attention.wq.bias": "model.layers.{i}.self_attn.q_proj.bias",
    "layers.{i}.attention.wk.bias": "model.layers.{i}.self_attn.k_proj.bias",
    "layers.{i}.attention.wv.bias": "model.layers.{i}.self_attn.v_proj.bias",
    "layers.{i}.attention.q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
    "layers.{i}.attention.k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
    "layers.{i}.feed_forward.w1.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "layers.{i}.feed_forward.w3.weight": "model.layers.{i}.mlp.up_proj.weight",
    "layers.{i}.feed_forward.w2.weight": "model.layers.{i}.mlp.down_proj.weight",
}

# canonical name template -> GGUF (llama.cpp) name template
GGUF_NAMES: dict[str, str] = {
    "tok_embeddings.weight": "token_embd.weight",
    "norm.weight": "output_norm.weight",
    "output.weight": "output.weight",
    "layers.{i}.attention_norm.weight": "blk.{i}.attn_norm.weight",
    "layers.{i}.ffn_norm.weight": "blk.{i}.ffn_norm.weight",
    "layers.{i}.attention.wq.weight": "blk.{i}.attn_q.weight",
    "layers.{i}.attention.wk.weight": "blk.{i}.attn_k.weight",
    "layers.{i}.attention.wv.weight": "blk.{i}.attn_v.weight",
    "layers.{i}.attention.wo.weight": "blk.{i}.attn_output.weight",
    "layers.{i}.attention.wq.bias": "blk.{i}.attn_q.bias",
    "layers.{i}.attention.wk.bias": "blk.{i}.attn_k.bias",
    "layers.{i}.attention.wv.bias": "blk.{i}.attn_v.bias",
    "layers.{i}.attention.q_norm.weight": "blk.{i}.attn_q_norm.weight",
    "layers.{i}.attention.k_norm.weight": "blk.{i}.attn_k_norm.weight",
    "layers.{i}.feed_forward.w1.weight": "blk.{i}.ffn_gate.weight",
    "layers.{i}.feed_forward.w3.weight": "blk.{i}.ffn_up.weight",
    "layers.{i}.feed_forward.w2.weight": "blk.{i}.ffn_down.weight",
}

# Gemma 3 wraps attention and the MLP in norms on both sides ("sandwich" norms): its HF `post_attention_layernorm`
# is the norm after attention, not the MLP's pre-norm as in Llama, so the tables are per family.
GEMMA3_HF_NAMES: dict[str, str] = {
    **HF_NAMES,
    "layers.{i}.ffn_norm.weight": "model.layers.{i}.pre_feedforward_layernorm.weight",
    "layers.{i}.post_attention_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "layers.{i}.post_ffw_norm.weight": "model.layers.{i}.post_feedforward_layernorm.weight",
}
GEMMA3_GGUF_NAMES: dict[str, str] = {
    **GGUF_NAMES,
    "layers.{i}.post_attention_norm.weight": "blk.{i}.post_attention_norm.weight",
    "layers.{i}.post_ffw_norm.weight": "blk.{i}.post_ffw_norm.weight",
}

# Source tensors that carry no weights (old checkpoints save rotary buffers); skipped, never an error.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclass(frozen=True)
class Family:
    name: str
    hf_architectures: tuple[str, ...]
    hf_model_types: tuple[str, ...]
    gguf_architectures: tuple[str, ...]
    qkv_bias: bool
    qk_norm: bool
    default_tied: bool
    # llama.cpp's converter permutes q/k rows of Llama models for its interleaved RoPE; we undo it on load.
    gguf_permuted_qk: bool
    hf_names: dict[str, str] = field(default_factory=lambda: HF_NAMES, compare=False)
    gguf_names: dict[str, str] = field(default_factory=lambda: GGUF_NAMES, compare=False)
    # Added to every RMSNorm weight read from a Hugging Face checkpoint: Gemma stores w and computes x * (1 + w);
    # edgekit's canonical norm weight is the multiplier itself (1 + w), which is also what llama.cpp's GGUF stores,
    # so every graph builder's RMSNorm stays x * weight.
    hf_norm_offset: float = 0.0

    def canonical_names(self, num_layers: int, tied: bool, bias: bool) -> list[str]:
        """Every canonical tensor name this family's checkpoint must provide."""
        names: list[str] = []
        for tmpl in self.hf_names:
            if tmpl.endswith(".bias") and not bias:
                continue
            if "_norm." in tmpl and tmpl.startswith("layers.{i}.attention.") and not self.qk_norm:
                continue
            if tmpl == "output.weight" and tied:
                continue
            if "{i}" in tmpl:
                names.extend(tmpl.format(i=i) for i in range(num_layers))
            else:
                names.append(tmpl)
        return names


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("llama", ("LlamaForCausalLM",), ("llama",), ("llama",), False, False, False, True),
        Family("qwen2", ("Qwen2ForCausalLM",), ("qwen2",), ("qwen2",), True, False, False, False),
        Family("qwen3", ("Qwen3ForCausalLM",), ("qwen3",), ("qwen3",), False, True, True, False),
        Family("gemma3", ("Gemma3ForCausalLM",), ("gemma3_text",), ("gemma3",), False, True, True, False,
               hf_names=GEMMA3_HF_NAMES, gguf_names=GEMMA3_GGUF_NAMES, hf_norm_offset=1.0),
    )
}


def supported_architectures() -> str:
    return ", ".join(a for f in FAMILIES.values() for a in f.hf_architectures)


def family_for_architecture(arch: str, model_type: str | None = None) -> Family:
    for fam in FAMILIES.values():
        if arch in fam.hf_architectures or (model_type and model_type in fam.hf_model_types):
            return fam
    raise UnsupportedArchitecture(
        f"architecture {arch!r} (model_type {model_type!r}) is not supported; supported: {supported_architectures()}"
    )


def family_for_gguf(arch: str) -> Family:
    for fam in FAMILIES.values():
        if arch in fam.gguf_architectures:
            return fam
    names = ", ".join(a for f in FAMILIES.values() for a in f.gguf_architectures)
    raise UnsupportedArchitecture(f"GGUF architecture {arch!r} is not supported; supported: {names}")


def source_name_map(table: dict[str, str], canonical: list[str]) -> dict[str, str]:
    """source name -> canonical name, for the canonical names a model needs."""
    out: dict[str, str] = {}
    for tmpl, src in table.items():
        if "{i}" not in tmpl:
            if tmpl in canonical:
                out[src] = tmpl
            continue
        prefix = tmpl.split("{i}")[0]
        for name in canonical:
            if name.startswith(prefix) and name.endswith(tmpl.split("{i}")[1]):
                i = name[len(prefix):].split(".")[0]
                if tmpl.format(i=i) == name:
                    out[src.format(i=i)] = name
    return out
