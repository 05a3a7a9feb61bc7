"""Which safetensors file each tensor of a (sharded) checkpoint is read from.

A tensor is read from exactly one shard. When model.safetensors.index.json exists it is authoritative: every tensor
comes from the shard its weight_map names, and any disagreement between the index and the shards' headers is an
error (the shards and the index were not written together, so which copy is right cannot be known). Without an
index, a tensor stored in two shards is an error too: reading both and keeping the last one would pick a winner by
file name order.
"""
from __future__ import annotations

import json
from pathlib import Path

from edgekit.errors import CheckpointError

INDEX = "model.safetensors.index.json"


def read_index(folder: Path) -> dict[str, str] | None:
    """The index's weight_map (tensor name -> shard file name), or None when the folder has no index."""
    index = folder / INDEX
    if not index.exists():
        return None
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{index} is not a valid safetensors index ({type(e).__name__}: {e})") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index}: weight_map must map tensor names to shard file names")
    return weight_map


def shard_files(folder: Path, weight_map: dict[str, str] | None) -> list[Path]:
    """The safetensors files to read: the index's shards, else model.safetensors, else every *.safetensors."""
    if weight_map is not None:
        files = sorted({folder / f for f in weight_map.values()})
        missing = [f.name for f in files if not f.exists()]
        if missing:
            raise CheckpointError(f"{INDEX} lists shards that are not in {folder}: {', '.join(missing)}")
        return files
    single = folder / "model.safetensors"
    if single.exists():
        return [single]
    found = sorted(folder.glob("*.safetensors"))
    if found:
        return found
    raise CheckpointError(f"no weights in {folder}: expected model.safetensors or model-0000k-of-0000n.safetensors with "
                          f"{INDEX}")


def owners(headers: dict[Path, dict[str, dict]], weight_map: dict[str, str] | None) -> dict[str, Path]:
    """Tensor name -> the one shard to read it from; CheckpointError on a tensor in two shards, or on any
    disagreement with the index (a tensor it names in a shard that lacks it; one in a shard it maps elsewhere)."""
    if weight_map is not None:
        return _owners_by_index(headers, weight_map)
    out: dict[str, Path] = {}
    for path, header in headers.items():
        for name in header:
            if name in out:
                raise CheckpointError(f"tensor {name!r} is stored in two shards, {out[name].name} and {path.name}, "
                                      f"and there is no {INDEX} to say which one is meant; remove one copy or add "
                                      "the index")
            out[name] = path
    return out


def _owners_by_index(headers: dict[Path, dict[str, dict]], weight_map: dict[str, str]) -> dict[str, Path]:
    by_name = {path.name: path for path in headers}
    for name, shard in weight_map.items():
        if name not in headers[by_name[shard]]:
            raise CheckpointError(f"{INDEX} maps tensor {name!r} to {shard}, which does not hold it")
    for path, header in headers.items():
        for name in header:
            mapped = weight_map.get(name)
            if mapped is None:
                raise CheckpointError(f"{path.name} holds tensor {name!r}, which {INDEX} does not list; the index "
                                      "and the shards disagree")
            if mapped != path.name:
                raise CheckpointError(f"{path.name} holds tensor {name!r}, which {INDEX} maps to {mapped}; the index "
                                      "and the shards disagree (remove the stray copy or fix the index)")
    return {name: by_name[shard] for name, shard in weight_map.items()}
