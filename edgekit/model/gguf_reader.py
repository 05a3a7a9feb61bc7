"""Reading GGUF files (llama.cpp's format) into an EdgeModel: config, the quantized tensors as stored, their
dequantized canonical weights, tokenizer.

The file is memory-mapped (GGUFFile below; the `gguf` package gives the type table); every tensor's name, shape and
type is checked before any is read, then tensors are read one at a time: a block-quantized one is decoded into a
QuantizedTensor (gguf_blocks.py: the file's codes, scales and minimums; kept in `EdgeModel.source_quant`) whose
dequantization, bit-identical to gguf.quants', gives the float weight; F32/F16/BF16 go through gguf.quants.
llama.cpp's converter permutes the q/k rows of Llama models (its RoPE rotates interleaved pairs, HF's rotates
halves); `Family.gguf_permuted_qk` says when we undo that, exactly as transformers' GGUF loader does.
"""
from __future__ import annotations

import logging
import re
import struct
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from edgekit.errors import CheckpointError, EdgekitError
from edgekit.model.checkpoint import expected_shapes
from edgekit.model.config import ModelConfig, every_nth_global, gemma3_quirks
from edgekit.model.edge_model import EdgeModel
from edgekit.model.families import FAMILIES, family_for_gguf, source_name_map
from edgekit.model.gguf_blocks import BLOCK_TYPES, decode_gguf_blocks
from edgekit.quant.tensor import QuantizedTensor

log = logging.getLogger(__name__)

# GGML tensor types we read: float ones, and every block type llama.cpp writes for these models (each checked against
# gguf.quants' dequantization in tests/core, the legacy ones also against transformers' GGUF loader)
SUPPORTED_TYPES = ("F32", "F16", "BF16", *BLOCK_TYPES)
# tensors that carry no weights of their own; rope_freqs (Llama 3 rope scaling) goes into the config
_NON_WEIGHT_TENSORS = ("rope_freqs.weight",)


# GGUF metadata value type -> struct format (8 = string and 9 = array are handled apart)
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


class GGUFTensor(NamedTuple):
    name: str
    tensor_type: Any      # gguf.GGMLQuantizationType
    shape: np.ndarray     # GGUF order (fastest-moving dimension first), like gguf.ReaderTensor.shape
    data_offset: int
    n_bytes: int
    # memory-mapped: typed for float types, raw bytes [rows, row_bytes] for block types; None when the file ends
    # before this tensor's data does (a truncated download, a header-only file): its metadata stays readable
    data: np.ndarray | None


class GGUFFile:
    """A memory-mapped GGUF file: metadata as Python values, tensor table, tensor data as mmap views.

    gguf.GGUFReader builds one numpy object per array element of the metadata (SmolLM2's 49k tokens and merges:
    3 s on a quiet machine, 10 s on a busy one), so the header is parsed here with struct/np.frombuffer (~0.1 s);
    the gguf package still provides the type table and the dequantization."""

    def __init__(self, path: Path):
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        self.buf = np.memmap(path, dtype=np.uint8, mode="r")
        if bytes(self.buf[:4]) != b"GGUF":
            raise ValueError("GGUF magic bytes missing")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", self.buf, 4)
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version}; readable: 2, 3")
        pos, self.values = 24, {}
        for _ in range(n_kv):
            key, pos = self._string(pos)
            (vtype,) = struct.unpack_from("<I", self.buf, pos)
            self.values[key], pos = self._value(pos + 4, vtype)
        infos = []
        for _ in range(n_tensors):
            name, pos = self._string(pos)
            (n_dims,) = struct.unpack_from("<I", self.buf, pos)
            dims = struct.unpack_from(f"<{n_dims}Q", self.buf, pos + 4)
            raw_type, offset = struct.unpack_from("<IQ", self.buf, pos + 4 + 8 * n_dims)
            pos += 4 + 8 * n_dims + 12
            infos.append((name, dims, GGMLQuantizationType(raw_type), offset))
        align = int(self.values.get("general.alignment", 32))
        start = (pos + align - 1) // align * align
        self.tensors = []
        self.size = len(self.buf)
        self.data_end = start  # the byte after the last tensor's data: the size a complete file has (at least)
        for name, dims, qtype, offset in infos:
            block, type_size = GGML_QUANT_SIZES[qtype]
            n_elems = int(np.prod(dims)) if dims else 1
            n_bytes = n_elems * type_size // block
            np_shape = tuple(reversed(dims))
            begin = start + offset
            self.data_end = max(self.data_end, begin + n_bytes)
            raw = self.buf[begin:begin + n_bytes]
            if begin + n_bytes > self.size:
                data = None
            elif qtype.name in ("F32", "F16"):
                data = raw.view(np.float32 if qtype.name == "F32" else np.float16).reshape(np_shape)
            else:
                data = raw.reshape(*np_shape[:-1], np_shape[-1] // block * type_size)
            self.tensors.append(GGUFTensor(name, qtype, np.asarray(dims, dtype=np.uint64), begin, n_bytes, data))

    @property
    def truncated(self) -> bool:
        """The file ends before its tensor data does: metadata and tensor table readable, weights not."""
        return self.data_end > self.size

    def _string(self, pos: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", self.buf, pos)
        if pos + 8 + n > len(self.buf):
            raise ValueError("a string runs past the end of the file")
        return bytes(self.buf[pos + 8:pos + 8 + n]).decode("utf-8"), pos + 8 + n

    def _value(self, pos: int, vtype: int) -> tuple[Any, int]:
        if vtype == 8:
            return self._string(pos)
        if vtype == 9:
            atype, n = struct.unpack_from("<IQ", self.buf, pos)
            pos += 12
            if atype in _GGUF_SCALARS:
                dt = np.dtype(_GGUF_SCALARS[atype])
                values = np.frombuffer(self.buf, dtype=dt, count=n, offset=pos).tolist()
                return values, pos + n * dt.itemsize
            out = []
            for _ in range(n):
                value, pos = self._value(pos, atype)
                out.append(value)
            return out, pos
        fmt = _GGUF_SCALARS[vtype]  # KeyError: an unknown value type, i.e. a corrupt header
        return struct.unpack_from(fmt, self.buf, pos)[0], pos + struct.calcsize(fmt)


def open_gguf(path: Path) -> GGUFFile:
    """The GGUF file at `path`, with every failure turned into a CheckpointError naming the file."""
    try:
        return GGUFFile(path)
    except ValueError as e:
        if "GGMLQuantizationType" in str(e):
            bad = re.sub(r"np\.\w+\((\d+)\)", r"\1", str(e).split(" is not")[0])  # "np.uint32(99)" -> "99"
            raise CheckpointError(f"{path.name} has a tensor of unknown GGML quantization type {bad}; supported: "
                                  f"{', '.join(SUPPORTED_TYPES)}") from None
        raise CheckpointError(_unreadable(path, e)) from None
    except (struct.error, IndexError, KeyError, OSError, OverflowError, TypeError, UnicodeDecodeError,
            MemoryError) as e:
        raise CheckpointError(_unreadable(path, e)) from None


def _unreadable(path: Path, e: Exception) -> str:
    return (f"{path.name} is not a readable GGUF file: it is truncated or corrupt ({type(e).__name__}: {e}); "
            "accepted: a complete GGUF v2/v3 file as written by llama.cpp")


def metadata(reader: GGUFFile) -> dict[str, Any]:
    """All key/value fields as Python values (strings, numbers, lists)."""
    return reader.values


def config_from_gguf(meta: dict[str, Any], tensors: dict[str, tuple[tuple[int, ...], str]]) -> ModelConfig:
    """A ModelConfig from GGUF metadata; `tensors` maps GGUF tensor name -> (numpy shape, type name)."""
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise CheckpointError("the GGUF file has no general.architecture; it is not a model file llama.cpp wrote")
    fam = family_for_gguf(arch)

    def get(key: str, default: Any = None, required: bool = True) -> Any:
        value = meta.get(f"{arch}.{key}", default)
        if value is None and required:
            raise CheckpointError(f"GGUF metadata lacks {arch}.{key}, which a {fam.name} model needs")
        return value

    hidden, heads = int(get("embedding_length")), int(get("attention.head_count"))
    kv_heads = get("attention.head_count_kv", heads)
    if isinstance(kv_heads, list):
        if len(set(kv_heads)) != 1:
            raise CheckpointError(f"per-layer KV head counts {sorted(set(kv_heads))} are not supported; "
                                  "accepted: the same count in every layer")
        kv_heads = kv_heads[0]
    q_shape = tensors.get("blk.0.attn_q.weight", ((0,), ""))[0]
    head_dim = int(get("attention.key_length", None, False) or (q_shape[0] // heads if q_shape[0] else hidden // heads))
    scaling = get("rope.scaling.type", None, False)
    if scaling not in (None, "none"):
        raise CheckpointError(f"GGUF rope scaling type {scaling!r} is not supported; supported: none, or Llama 3 "
                              "scaling stored as rope_freqs.weight")
    # the embedding's rows are the truth (token lists can be shorter, e.g. Qwen's padded vocabularies)
    tokens = meta.get("tokenizer.ggml.tokens")
    embd = tensors.get("token_embd.weight")
    vocab = embd[0][0] if embd else (get("vocab_size", None, False) or len(tokens or ()))
    eos = [meta[k] for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                             "tokenizer.ggml.eom_token_id") if meta.get(k) is not None]
    extra = _gemma3_fields(get, int(get("block_count")), head_dim) if fam.name == "gemma3" else {}
    return ModelConfig(
        **extra,
        family=fam.name, architecture=fam.hf_architectures[0], vocab_size=int(vocab), hidden_size=hidden,
        intermediate_size=int(get("feed_forward_length")), num_layers=int(get("block_count")),
        num_heads=heads, num_kv_heads=int(kv_heads), head_dim=head_dim,
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
        rope_theta=float(get("rope.freq_base", 10000.0)),
        max_position_embeddings=int(get("context_length", 2048)),
        tie_word_embeddings="output.weight" not in tensors,
        attention_bias=fam.qkv_bias or "blk.0.attn_q.bias" in tensors, qk_norm=fam.qk_norm,
        stored_dtype=dominant_type(tensors),
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"),
        eos_token_ids=tuple(dict.fromkeys(int(e) for e in eos)),
    )


def _gemma3_fields(get, layers: int, head_dim: int) -> dict[str, Any]:
    """Gemma 3's quirks from GGUF metadata, filled in as llama.cpp does where the file is silent: the layer pattern
    (every 6th layer global), the sliding layers' RoPE base (10,000) and the query scale (head_dim ** -0.5, llama.cpp's
    rule for every Gemma 3 size but 27B, which uses hidden / heads and is far beyond an edge device)."""
    pattern = get("attention.sliding_window_pattern", None, False)
    if isinstance(pattern, list):  # newer converters store one flag per layer (true: sliding)
        types = tuple("sliding_attention" if flag else "full_attention" for flag in pattern)
    else:
        types = every_nth_global(layers, int(pattern or 6))
    return gemma3_quirks(hidden_size=int(get("embedding_length")), query_pre_attn_scalar=float(head_dim),
                         sliding_window=get("attention.sliding_window", None, False), layer_types=types,
                         rope_local_theta=float(get("rope.local.freq_base", 10000.0, False)))


def dominant_type(tensors: dict[str, tuple[tuple[int, ...], str]]) -> str:
    """The GGML type holding most of the weights (by element count), e.g. "Q4_1"."""
    count: Counter[str] = Counter()
    for shape, type_name in tensors.values():
        count[type_name] += int(np.prod(shape))
    return count.most_common(1)[0][0] if count else "F32"


def check_tensors(path: Path, reader, cfg: ModelConfig) -> dict[str, str]:
    """GGUF name -> canonical name, after checking names, shapes, types and that the data lies inside the file."""
    shapes = expected_shapes(cfg)
    name_map = source_name_map(FAMILIES[cfg.family].gguf_names, list(shapes))
    size = path.stat().st_size
    seen: dict[str, str] = {}
    for t in reader.tensors:
        if t.name in _NON_WEIGHT_TENSORS:
            continue
        canon = name_map.get(t.name)
        if canon is None:
            raise CheckpointError(f"{path.name}: tensor {t.name!r} has no place in a {cfg.family} model with this "
                                  "config (unmapped extra tensor)")
        if t.tensor_type.name not in SUPPORTED_TYPES:
            raise CheckpointError(f"{path.name}: tensor {t.name!r} is stored as {t.tensor_type.name}, which edgekit "
                                  f"cannot dequantize; supported: {', '.join(SUPPORTED_TYPES)}")
        shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        if shape != shapes[canon]:
            raise CheckpointError(f"{path.name}: tensor {t.name!r} has shape {list(shape)}, the config implies "
                                  f"{list(shapes[canon])}")
        if t.data_offset + t.n_bytes > size:
            raise CheckpointError(f"{path.name} is truncated: tensor {t.name!r} ends at byte "
                                  f"{t.data_offset + t.n_bytes}, the file has {size}")
        seen[t.name] = canon
    missing = [n for n in shapes if n not in seen.values()]
    if missing:
        src = {c: s for s, c in name_map.items()}
        raise CheckpointError(f"{path.name} misses {len(missing)} tensor(s): "
                              + ", ".join(src.get(m, m) for m in missing[:8]))
    return seen


def unpermute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's `permute` of q/k rows (HF half-split RoPE layout -> interleaved), per head."""
    dim = w.shape[0] // n_heads // 2
    return w.reshape(n_heads, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def _permuted_heads(cfg: ModelConfig, canon: str) -> int | None:
    """The head count whose rows llama.cpp permuted in this tensor, or None."""
    if not FAMILIES[cfg.family].gguf_permuted_qk:
        return None
    if canon.endswith(("attention.wq.weight", "attention.wq.bias")):
        return cfg.num_heads
    if canon.endswith(("attention.wk.weight", "attention.wk.bias")):
        return cfg.num_kv_heads
    return None


def iter_gguf_tensors(path: Path, reader, cfg: ModelConfig, dtype: torch.dtype
                      ) -> Iterator[tuple[str, torch.Tensor, QuantizedTensor | None]]:
    """(canonical name, weight in `dtype`, the file's quantized tensor or None) per weight, read one at a time; the
    quantized tensor gets the same row unpermute as the weight (a permutation of whole rows moves their groups)."""
    from gguf.quants import dequantize

    names = check_tensors(path, reader, cfg)
    for t in reader.tensors:
        canon = names.get(t.name)
        if canon is None:
            continue
        heads = _permuted_heads(cfg, canon)
        np_shape = tuple(int(d) for d in reversed(t.shape.tolist()))
        qt = None
        if t.tensor_type.name in BLOCK_TYPES:
            qt = decode_gguf_blocks(t.data, t.tensor_type.name, np_shape[-1])
            if heads:
                qt = qt.rows(torch.from_numpy(unpermute_qk(np.arange(qt.shape[0]), heads)))
            tensor = qt.dequantize().reshape(np_shape)
            if len(np_shape) != 2:
                qt = None  # QuantizedTensor is a matrix; llama.cpp quantizes no other rank for these models
        else:
            w = dequantize(t.data, t.tensor_type)
            if heads:
                w = unpermute_qk(w, heads)
            w = np.ascontiguousarray(w, dtype=np.float32)
            if np.shares_memory(w, t.data):  # F32 comes back as a view of the read-only memory map
                w = w.copy()
            tensor = torch.from_numpy(w)
        yield canon, tensor if dtype == torch.float32 else tensor.to(dtype), qt


def _rope_freq_factors(reader) -> tuple[float, ...] | None:
    for t in reader.tensors:
        if t.name == "rope_freqs.weight":
            from gguf.quants import dequantize

            return tuple(float(x) for x in dequantize(t.data, t.tensor_type).reshape(-1))
    return None


def check_complete(path: Path, reader: GGUFFile) -> None:
    """A CheckpointError if the file ends before its tensor data does, with both sizes: the usual cause is a download
    cut short, and the sizes tell how much is missing."""
    if reader.truncated:
        raise CheckpointError(
            f"{path.name} is truncated: its tensor table needs {reader.data_end:,} bytes, the file has "
            f"{reader.size:,} ({reader.size / reader.data_end:.1%}); its metadata and tokenizer are readable "
            "(edgekit info), its weights are not; accepted: the complete GGUF file")


def _read_header(reader: GGUFFile) -> tuple[dict[str, Any], ModelConfig]:
    import dataclasses

    meta = metadata(reader)
    tensors = {t.name: (tuple(int(d) for d in reversed(t.shape.tolist())), t.tensor_type.name) for t in reader.tensors}
    cfg = config_from_gguf(meta, tensors)
    if not reader.truncated:  # the factors are tensor data
        factors = _rope_freq_factors(reader)
        if factors is not None:
            cfg = dataclasses.replace(cfg, rope_freq_factors=factors)
    return meta, cfg


def _with_tokenizer(model: EdgeModel, meta: dict[str, Any]) -> EdgeModel:
    try:
        from edgekit.model.tokenizer import Tokenizer

        model._tokenizer = Tokenizer.from_gguf(meta, model.config.eos_token_ids)
    except EdgekitError as e:
        model._tokenizer_problem = str(e)
        log.warning("%s", e)
    return model


def load_gguf_header(path: Path) -> tuple[EdgeModel, GGUFFile]:
    """A weightless EdgeModel (config and tokenizer from the metadata) and the reader, for describing a file, even
    one whose tensor data is cut off; load_gguf is the one that gives weights."""
    reader = open_gguf(path)
    meta, cfg = _read_header(reader)
    model = EdgeModel(config=cfg, weights={}, source=path, source_format="gguf", name=path.stem)
    return _with_tokenizer(model, meta), reader


def load_gguf(path: Path, dtype: torch.dtype = torch.float32) -> EdgeModel:
    """Load a GGUF file into an EdgeModel (weights dequantized to `dtype`); the tokenizer comes from its metadata."""
    reader = open_gguf(path)
    check_complete(path, reader)
    meta, cfg = _read_header(reader)
    weights, source_quant = {}, {}
    for canon, tensor, qt in iter_gguf_tensors(path, reader, cfg, dtype):
        weights[canon] = tensor
        if qt is not None:
            source_quant[canon] = qt
    model = EdgeModel(config=cfg, weights=weights, source=path, source_format="gguf", name=path.stem,
                      source_quant=source_quant)
    return _with_tokenizer(model, meta)
