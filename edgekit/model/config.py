"""ModelConfig: one frozen description of a decoder, normalised once from config.json or GGUF metadata."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edgekit.errors import CheckpointError
from edgekit.model.families import Family, family_for_architecture

_DTYPE_BYTES = {"fp32": 4.0, "fp16": 2.0, "int8": 1.0, "int4": 0.5}
# Rows a sliding layer's ring cache keeps beyond its window: a caller may go back this many positions (a rejected
# speculative draft, a regenerated last reply) and still find the whole window (graph.RingCachedAttention).
RING_REWIND = 32


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
    # Gemma-style quirks; the defaults are the plain Llama decoder, so other families never set them.
    hidden_act: str = "silu"  # the MLP gate's activation: "silu" (SwiGLU) or "gelu_tanh" (GeGLU, tanh-approximate)
    embed_scale: float | None = None  # token embeddings multiplied by this (Gemma: sqrt(hidden_size))
    sandwich_norms: bool = False  # an RMSNorm after attention and after the MLP too, before each residual add
    query_scale: float | None = None  # softmax scale of q.k; None is head_dim ** -0.5
    # sliding-window attention: layer i attends to the last `sliding_window` positions (itself included) when
    # layer_types[i] == "sliding_attention", with RoPE base rope_local_theta; "full_attention" layers see everything
    sliding_window: int | None = None
    layer_types: tuple[str, ...] | None = None
    rope_local_theta: float | None = None

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
            extra = _gemma_fields(cfg, head_dim) if fam.name == "gemma3" else {}
            return cls(
                **extra,
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
                rope_theta=float(_rope_theta(cfg, "full_attention")),
                max_position_embeddings=int(cfg.get("max_position_embeddings", 2048)),
                tie_word_embeddings=bool(cfg.get("tie_word_embeddings", fam.default_tied)),
                attention_bias=bool(cfg.get("attention_bias", fam.qkv_bias)) or fam.qkv_bias,
                qk_norm=fam.qk_norm,
                stored_dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32"),
                rope_scaling=_rope_scaling(cfg, "full_attention"),
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
        if self.hidden_act != "silu":
            found.add(f"act_{self.hidden_act}")
        found |= {name for name, on in (("embed_scale", self.embed_scale is not None),
                                        ("sandwich_norms", self.sandwich_norms),
                                        ("sliding_window", self.has_sliding_layers)) if on}
        if self.query_scale is not None and abs(self.query_scale - self.head_dim ** -0.5) > 1e-12:
            found.add("query_scale")
        return frozenset(found)

    @property
    def has_sliding_layers(self) -> bool:
        return bool(self.sliding_window) and "sliding_attention" in (self.layer_types or ())

    def is_sliding(self, layer: int) -> bool:
        return self.has_sliding_layers and self.layer_types[layer] == "sliding_attention"

    @property
    def softmax_scale(self) -> float:
        return self.head_dim ** -0.5 if self.query_scale is None else self.query_scale

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
        per_layer = attn + 3 * h * i + (4 if self.sandwich_norms else 2) * h
        emb = v * h * (1 if self.tie_word_embeddings else 2)
        return self.num_layers * per_layer + emb + h

    def weight_bytes(self, dtype: str) -> int:
        return int(self.num_parameters * _DTYPE_BYTES[dtype])

    def cache_positions(self, layer: int, context: int) -> int:
        """Positions layer `layer` keeps for a `context`-long sequence: a sliding layer keeps its window (and
        RING_REWIND rows to go back into) only."""
        return min(context, self.sliding_window + RING_REWIND) if self.is_sliding(layer) else context

    def kv_cache_bytes(self, context: int, dtype: str) -> int:
        """Bytes of a K+V cache of `context` positions (sliding layers hold their window only); int8 adds one fp32
        scale per (position, kv head)."""
        positions = sum(self.cache_positions(i, context) for i in range(self.num_layers))
        elems = 2 * positions * self.kv_dim
        scales = 2 * positions * self.num_kv_heads * 4 if dtype in ("int8", "int4") else 0
        return int(elems * _DTYPE_BYTES[dtype]) + scales

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rope_params(cfg: dict[str, Any], layer_type: str) -> dict[str, Any]:
    """The rope parameters of one layer type: transformers 5 nests them per layer type for models with several
    ({"sliding_attention": {...}, "full_attention": {...}}), else it is one flat dict."""
    params = cfg.get("rope_parameters") or {}
    nested = params.get(layer_type)
    return nested if isinstance(nested, dict) else params


def _rope_theta(cfg: dict[str, Any], layer_type: str) -> float:
    if "rope_theta" in cfg:
        return cfg["rope_theta"]
    return _rope_params(cfg, layer_type).get("rope_theta", 10000.0)


def _gemma_fields(cfg: dict[str, Any], head_dim: int) -> dict[str, Any]:
    """Gemma 3's quirks from its config.json, refusing the options edgekit's graph does not compute."""
    for key in ("final_logit_softcapping", "attn_logit_softcapping"):
        if cfg.get(key) is not None:
            raise CheckpointError(f"{key} {cfg[key]!r} is not supported; supported: null (Gemma 3 has none)")
    if cfg.get("use_bidirectional_attention"):
        raise CheckpointError("use_bidirectional_attention true is not supported; supported: false (a causal decoder)")
    act = cfg.get("hidden_activation") or cfg.get("hidden_act") or "gelu_pytorch_tanh"
    if act != "gelu_pytorch_tanh":
        raise CheckpointError(f"hidden_activation {act!r} is not supported for gemma3; supported: 'gelu_pytorch_tanh'")
    layers = int(cfg["num_hidden_layers"])
    types = cfg.get("layer_types")
    if types is None:  # older configs give the pattern: every n-th layer is global
        types = every_nth_global(layers, int(cfg.get("sliding_window_pattern", 6)))
    bad = sorted(set(types) - {"full_attention", "sliding_attention"})
    if bad or len(types) != layers:
        raise CheckpointError(f"layer_types {types!r} is not supported; accepted: {layers} entries, each "
                              "'full_attention' or 'sliding_attention'")
    local = _rope_params(cfg, "sliding_attention")
    if (local.get("rope_type") or "default") != "default":
        raise CheckpointError(f"rope type {local['rope_type']!r} on sliding layers is not supported; supported: "
                              "'default'")
    return gemma3_quirks(hidden_size=int(cfg["hidden_size"]),
                         query_pre_attn_scalar=float(cfg.get("query_pre_attn_scalar") or head_dim),
                         sliding_window=cfg.get("sliding_window"), layer_types=types,
                         rope_local_theta=float(local.get("rope_theta", cfg.get("rope_local_base_freq", 10000.0))))


def every_nth_global(layers: int, n: int) -> tuple[str, ...]:
    """Gemma 3's layer pattern: layer i is global when (i + 1) % n == 0, sliding otherwise."""
    return tuple("full_attention" if (i + 1) % n == 0 else "sliding_attention" for i in range(layers))


def gemma3_quirks(*, hidden_size: int, query_pre_attn_scalar: float, sliding_window: int | None,
                  layer_types, rope_local_theta: float) -> dict[str, Any]:
    """The ModelConfig fields that make a decoder Gemma 3, from either source's spelling of them."""
    return {"hidden_act": "gelu_tanh", "embed_scale": float(hidden_size) ** 0.5, "sandwich_norms": True,
            "query_scale": float(query_pre_attn_scalar) ** -0.5,
            "sliding_window": int(sliding_window) if sliding_window else None, "layer_types": tuple(layer_types),
            "rope_local_theta": float(rope_local_theta)}


def _rope_scaling(cfg: dict[str, Any], layer_type: str) -> RopeScaling | None:
    rs = cfg.get("rope_scaling") or _rope_params(cfg, layer_type)
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
