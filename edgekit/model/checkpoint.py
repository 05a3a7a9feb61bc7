"""Reading Hugging Face safetensors checkpoints (single or sharded) into canonical tensors.

Every tensor is checked: unmapped, missing, or wrongly shaped tensors raise CheckpointError naming them.
A tensor kept in its stored dtype is a view of a copy-on-write map of the file (pages.py: nothing is read until used,
and an export can give the pages back once it has quantized them). A tensor converted to another dtype is read with
plain file reads, one at a time, so at most one copy of the weights (plus one tensor in its stored dtype) is in
memory. GGUF reading lives in gguf_reader.py.
"""
from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import torch

from edgekit.errors import CheckpointError
from edgekit.model import pages, shards
from edgekit.model.config import ModelConfig
from edgekit.model.families import FAMILIES, IGNORED_SUFFIXES, source_name_map


def expected_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Canonical name -> shape for every tensor the config implies."""
    fam = FAMILIES[cfg.family]
    h, kv, q, i, v, d = cfg.hidden_size, cfg.kv_dim, cfg.q_dim, cfg.intermediate_size, cfg.vocab_size, cfg.head_dim
    by_suffix = {
        "tok_embeddings.weight": (v, h), "norm.weight": (h,), "output.weight": (v, h),
        "attention_norm.weight": (h,), "ffn_norm.weight": (h,), "post_attention_norm.weight": (h,),
        "post_ffw_norm.weight": (h,),
        "attention.wq.weight": (q, h), "attention.wk.weight": (kv, h), "attention.wv.weight": (kv, h),
        "attention.wo.weight": (h, q), "attention.wq.bias": (q,), "attention.wk.bias": (kv,),
        "attention.wv.bias": (kv,), "attention.q_norm.weight": (d,), "attention.k_norm.weight": (d,),
        "feed_forward.w1.weight": (i, h), "feed_forward.w3.weight": (i, h), "feed_forward.w2.weight": (h, i),
    }
    out = {}
    for name in fam.canonical_names(cfg.num_layers, cfg.tie_word_embeddings, cfg.attention_bias):
        key = name.split(".", 2)[2] if name.startswith("layers.") else name
        out[name] = by_suffix[key]
    return out


def _check_complete(path: Path) -> dict[str, dict]:
    """Parse the safetensors header ourselves, so a truncated file is named before torch touches it."""
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size:
                raise ValueError("header length beyond end of file")
            header = json.loads(f.read(n), object_pairs_hook=_unique_keys)
    except (struct.error, ValueError) as e:
        raise CheckpointError(f"{path.name} is not a readable safetensors file ({e})") from None
    header.pop("__metadata__", None)
    end = max((meta["data_offsets"][1] for meta in header.values()), default=0)
    if 8 + n + end > size:
        raise CheckpointError(f"{path.name} is truncated: its header needs {8 + n + end} bytes, the file has {size}")
    for meta in header.values():
        meta["data_start"] = 8 + n  # where the data section begins (offsets are relative to it)
    return header


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """json.loads would keep the last of two equal keys: a header naming one tensor twice is refused instead."""
    out = dict(pairs)
    if len(out) != len(pairs):
        dup = next(k for i, (k, _) in enumerate(pairs) if k in dict(pairs[:i]))
        raise ValueError(f"the header names {dup!r} twice")
    return out


_ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}


def _read_tensor(f, mm, path: Path, name: str, meta: dict, dtype: torch.dtype | None) -> torch.Tensor:
    """One tensor: a view of the file's map `mm` when it keeps its stored dtype (and is aligned), else plain file I/O
    and a conversion (a converted tensor read through the map would leave the file's pages resident)."""
    src = _ST_DTYPES.get(meta["dtype"])
    if src is None:
        raise CheckpointError(f"{path.name}: tensor {name!r} is stored as {meta['dtype']}; supported: "
                              f"{', '.join(_ST_DTYPES)}")
    start, stop = meta["data_offsets"]
    if mm is not None and (dtype is None or src == dtype):
        view = pages.tensor_view(mm, meta["data_start"] + start, stop - start, src, meta["shape"])
        if view is not None:
            return view
    buf = torch.empty(stop - start, dtype=torch.uint8)
    f.seek(meta["data_start"] + start)
    if f.readinto(buf.numpy()) != stop - start:
        raise CheckpointError(f"{path.name}: tensor {name!r} is cut short (the file ends early)")
    tensor = buf.view(src).reshape(meta["shape"])
    return tensor if dtype is None or src == dtype else tensor.to(dtype)


def iter_safetensors(folder: Path, cfg: ModelConfig, dtype: torch.dtype | None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (canonical name, tensor) for every tensor of the checkpoint, checking names and shapes; each tensor
    comes from exactly one shard (shards.py: the index decides, a tensor in two shards is an error)."""
    shapes = expected_shapes(cfg)
    name_map = source_name_map(FAMILIES[cfg.family].hf_names, list(shapes))
    weight_map = shards.read_index(folder)
    headers = {path: _check_complete(path) for path in shards.shard_files(folder, weight_map)}
    # tensors that are never read (ignored buffers, a tied head's second copy) are left out of the shard checks
    owner = shards.owners({p: {k: v for k, v in h.items() if not _skipped(k, cfg)} for p, h in headers.items()},
                          None if weight_map is None else {k: v for k, v in weight_map.items() if not _skipped(k, cfg)})
    for path, header in headers.items():
        _check_header(path, header, cfg, name_map, shapes)
    seen: set[str] = set()
    for path, header in headers.items():
        mm = pages.map_file(path)
        with path.open("rb") as f:
            for src, meta in header.items():
                canon = name_map.get(src)
                if canon is None or _skipped(src, cfg) or owner[src] != path:
                    continue
                seen.add(canon)
                tensor = _read_tensor(f, mm, path, src, meta, dtype)
                yield canon, _with_norm_offset(canon, tensor, FAMILIES[cfg.family].hf_norm_offset)
    missing = [n for n in shapes if n not in seen]
    if missing:
        src_names = {c: s for s, c in name_map.items()}
        raise CheckpointError(f"checkpoint in {folder} misses {len(missing)} tensor(s): "
                              + ", ".join(src_names.get(m, m) for m in missing[:8]))


def _with_norm_offset(canon: str, tensor: torch.Tensor, offset: float) -> torch.Tensor:
    """A norm weight as the multiplier edgekit's RMSNorm applies (families.Family.hf_norm_offset), added in fp32 as
    the source model computes it."""
    if not offset or not canon.endswith("norm.weight"):
        return tensor
    return (tensor.float() + offset).to(tensor.dtype)


def _skipped(src: str, cfg: ModelConfig) -> bool:
    # some tied checkpoints save the shared matrix twice
    return src.endswith(IGNORED_SUFFIXES) or (src == "lm_head.weight" and cfg.tie_word_embeddings)


def _check_header(path: Path, header: dict[str, dict], cfg: ModelConfig, name_map: dict[str, str],
                  shapes: dict[str, tuple[int, ...]]) -> None:
    """Every tensor of one shard has a place in the model and the shape the config implies."""
    for src in header:
        if _skipped(src, cfg):
            continue
        canon = name_map.get(src)
        if canon is None:
            raise CheckpointError(f"{path.name}: tensor {src!r} has no place in a {cfg.family} model with this config "
                                  f"(unmapped extra tensor)")
        shape = tuple(header[src]["shape"])
        if shape != shapes[canon]:
            raise CheckpointError(f"{path.name}: tensor {src!r} has shape {list(shape)}, the config implies "
                                  f"{list(shapes[canon])}")
