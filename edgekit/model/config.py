"""ModelConfig: one frozen description of a decoder, normalised once from config.json or GGUF metadata."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edgekit.errors import CheckpointError
from edgekit.model.families import Family, family_for_architecture

_DTYPE_BYTES = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "int4": 0.5}


@dataclass(frozen=True)
class RopeScaling:
    """Llama-3 style frequency scaling (the only kind the supported families use)."""

    rope_type: str = "llama3"
    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


@dataclass(frozen=True)
class ModelConfig:
    family: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    attention_bias: bool
    qk_norm: bool
    stored_dtype: str = "float32"
    rope_scaling: RopeScaling | None = None
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = field(default_factory=tuple)
    architecture: str = ""
    # per-frequency divisors of RoPE's inverse frequencies, as llama.cpp stores Llama 3 scaling (rope_freqs.weight)
    rope_freq_factors: tuple[float, ...] | None = None

    # ---- construction -------------------------------------------------
    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> ModelConfig:
        archs = cfg.get("architectures") or [cfg.get("model_type", "?")]
        fam: Family = family_for_architecture(archs[0], cfg.get("model_type"))
        try:
            hidden = int(cfg["hidden_size"])
            heads = int(cfg["num_attention_heads"])
            head_dim = int(cfg.get("head_dim") or hidden // heads)
            eos = cfg.get("eos_token_id")
            eos_ids = tuple(eos) if isinstance(eos, list) else (() if eos is None else (int(eos),))
            return cls(
                family=fam.name,
                architecture=archs[0],
                vocab_size=int(cfg["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(cfg["intermediate_size"]),
                num_layers=int(cfg["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
                head_dim=head_dim,
                rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
                rope_theta=float(_rope_theta(cfg)),
                max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", fam.default_tied)),
                attention_bias=bool(cfg.get("attention_bias", fam.qkv_bias)) or fam.qkv_bias,
                qk_norm=fam.qk_norm,
                stored_dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32"),
                rope_scaling=_rope_scaling(cfg),
                bos_token_id=cfg.get("bos_token_id"),
                eos_token_ids=eos_ids,
            )
        except KeyError as e:
            raise CheckpointError(f"config.json lacks the field {e.args[0]!r}, which a {fam.name} model needs") from None

    # ---- derived facts --------------------------------------------------
    def features(self) -> frozenset[str]:
        """The model features a graph builder must implement to compute this model (beyond the plain pre-norm decoder
        with RoPE, GQA and a SwiGLU MLP). Each target declares the ones its builder implements
        (Capabilities.model_features) and export refuses a model needing one it lacks: a builder that did not know a
        feature would otherwise ignore it and compute another model."""
        found = {name for name, on in (("qk_norm", self.qk_norm), ("attention_bias", self.attention_bias),
                                       ("tied_embeddings", self.tie_word_embeddings),
                                       ("rope_freq_factors", self.rope_freq_factors is not None)) if on}
        if self.rope_scaling is not None:
            found.add(f"rope_scaling_{self.rope_scaling.rope_type}")
        return frozenset(found)

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def num_parameters(self) -> int:
        h, i, v = self.hidden_size, self.intermediate_size, self.vocab_size
        attn = h * self.q_dim + 2 * h * self.kv_dim + self.q_dim * h
        if self.attention_bias:
            attn += self.q_dim + 2 * self.kv_dim
        if self.qk_norm:
            attn += 2 * self.head_dim
        per_layer = attn + 3 * h * i + 2 * h
        emb = v * h * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * per_layer + emb + h

    def weight_bytes(self, dtype: str) -> int:
        return int(self.num_parameters * _DTYPE_BYTES[dtype])

    def kv_cache_bytes(self, context: int, dtype: str) -> int:
        """Bytes of a K+V cache of `context` positions; int8 adds one fp32 scale per (position, kv head)."""
        elems = 2 * self.num_layers * context * self.kv_dim
        scales = 2 * self.num_layers * context * self.num_kv_heads * 4 if dtype in ("int8", "int4") else 0
        return int(elems * _DTYPE_BYTES[dtype]) + scales

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rope_theta(cfg: dict[str, Any]) -> float:
    if "rope_theta" in cfg:
        return cfg["rope_theta"]
    params = cfg.get("rope_parameters") or {}
    return params.get("rope_theta", 10000.0)


def _rope_scaling(cfg: dict[str, Any]) -> RopeScaling | None:
    rs = cfg.get("rope_scaling") or cfg.get("rope_parameters")
    if not rs:
        return None
    kind = rs.get("rope_type") or rs.get("type")
    if kind in (None, "default"):
        return None
    if kind != "llama3":
        raise CheckpointError(f"rope scaling type {kind!r} is not supported; supported: 'llama3' or none")
    return RopeScaling(
        factor=float(rs["factor"]),
        low_freq_factor=float(rs.get("low_freq_factor", 1.0)),
        high_freq_factor=float(rs.get("high_freq_factor", 4.0)),
        original_max_position_embeddings=int(rs.get("original_max_position_embeddings", 8192)),
    )
