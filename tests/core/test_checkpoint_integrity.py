"""Checkpoints that would load into wrong numbers without a word: a tensor in two shards, an index that disagrees with
its shards, NaN/Inf weights. Each is a CheckpointError naming the tensor (and the files)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from gguf_files import write_gguf
from safetensors.torch import load_file, save_file

import edgekit
from edgekit.errors import CheckpointError
from edgekit.model.shards import INDEX

MOVED = "model.embed_tokens.weight"     # the tensor the shard tests copy or move between shards


@pytest.fixture
def sharded(ckpt, tmp_path) -> Path:
    """A private copy of the tiny sharded qwen2 checkpoint (several shards + index)."""
    folder = shutil.copytree(ckpt("qwen2_sharded"), tmp_path / "sharded")
    assert len(list(folder.glob("*.safetensors"))) > 1 and (folder / INDEX).exists()
    return folder


def index_of(folder: Path) -> dict:
    return json.loads((folder / INDEX).read_text())


def shard_holding(folder: Path, name: str) -> Path:
    return folder / index_of(folder)["weight_map"][name]


def other_shard(folder: Path, name: str) -> Path:
    return next(p for p in sorted(folder.glob("*.safetensors")) if p != shard_holding(folder, name))


def edit_shard(path: Path, edit) -> None:
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path), metadata={"format": "pt"})


def copy_into_other_shard(folder: Path, value_offset: float = 1.0) -> tuple[Path, Path]:
    """Put a second, different copy of MOVED into another shard; returns (indexed shard, stray shard)."""
    home, stray = shard_holding(folder, MOVED), other_shard(folder, MOVED)
    original = load_file(str(home))[MOVED]
    edit_shard(stray, lambda s: s.__setitem__(MOVED, original + value_offset))
    return home, stray


def test_the_sharded_checkpoint_loads_as_it_is(sharded):
    model = edgekit.load(sharded)
    expected = load_file(str(shard_holding(sharded, MOVED)))[MOVED]
    assert torch.equal(model.weights["tok_embeddings.weight"], expected)


def test_a_tensor_in_two_shards_without_an_index_is_refused(sharded):
    home, stray = copy_into_other_shard(sharded)
    (sharded / INDEX).unlink()
    with pytest.raises(CheckpointError) as e:
        edgekit.load(sharded)
    msg = str(e.value)
    assert repr(MOVED) in msg and home.name in msg and stray.name in msg and "two shards" in msg


@pytest.mark.parametrize("indexed", ["first", "second"])
def test_a_stray_copy_the_index_maps_elsewhere_is_refused(sharded, indexed):
    """Whichever shard the index names, the other copy is a disagreement (before: the later shard silently won)."""
    home, stray = copy_into_other_shard(sharded)
    if indexed == "second":
        doc = index_of(sharded)
        doc["weight_map"][MOVED] = stray.name
        (sharded / INDEX).write_text(json.dumps(doc))
        home, stray = stray, home
    with pytest.raises(CheckpointError) as e:
        edgekit.load(sharded)
    msg = str(e.value)
    assert f"{stray.name} holds tensor {MOVED!r}" in msg and f"maps to {home.name}" in msg


def test_an_index_naming_a_tensor_its_shard_lacks_is_refused(sharded):
    """The tensor moved to another shard, the index still names the old one."""
    home, other = shard_holding(sharded, MOVED), other_shard(sharded, MOVED)
    value = load_file(str(home))[MOVED]
    edit_shard(home, lambda s: s.pop(MOVED))
    edit_shard(other, lambda s: s.__setitem__(MOVED, value))
    with pytest.raises(CheckpointError) as e:
        edgekit.load(sharded)
    assert f"maps tensor {MOVED!r} to {home.name}, which does not hold it" in str(e.value)


def test_a_tensor_the_index_does_not_list_is_refused(sharded):
    doc = index_of(sharded)
    home = sharded / doc["weight_map"].pop(MOVED)
    (sharded / INDEX).write_text(json.dumps(doc))
    with pytest.raises(CheckpointError) as e:
        edgekit.load(sharded)
    assert f"{home.name} holds tensor {MOVED!r}, which {INDEX} does not list" in str(e.value)


def test_a_header_naming_one_tensor_twice_is_refused(qwen2_copy):
    path = qwen2_copy / "model.safetensors"
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = data[8:8 + n].decode()
    first = header.index('"model.norm.weight"')
    entry_end = header.index("}", first) + 1
    entry = header[first:entry_end]
    doubled = header[:entry_end] + "," + entry + header[entry_end:]
    doubled += " " * ((8 - len(doubled) % 8) % 8)
    path.write_bytes(len(doubled).to_bytes(8, "little") + doubled.encode() + data[8 + n:])
    with pytest.raises(CheckpointError) as e:
        edgekit.load(qwen2_copy)
    assert "'model.norm.weight' twice" in str(e.value) and "model.safetensors" in str(e.value)


@pytest.fixture
def qwen2_copy(ckpt, tmp_path) -> Path:
    return shutil.copytree(ckpt("qwen2"), tmp_path / "qwen2")


def poison(folder: Path, name: str, values: list[float]) -> None:
    def edit(state):
        flat = state[name].reshape(-1)
        flat[:len(values)] = torch.tensor(values)

    edit_shard(folder / "model.safetensors", edit)


@pytest.mark.parametrize("values,nan,inf", [([float("nan")], 1, 0), ([float("inf"), -float("inf"), 1.0], 0, 2)])
def test_non_finite_weight_is_refused_at_load(qwen2_copy, values, nan, inf):
    bad = "model.layers.1.mlp.down_proj.weight"
    poison(qwen2_copy, bad, values)
    with pytest.raises(CheckpointError) as e:
        edgekit.load(qwen2_copy)
    msg = str(e.value)
    assert repr(bad) in msg and f"{nan + inf} non-finite value(s) ({nan} NaN, {inf} Inf)" in msg


def test_non_finite_weight_in_stored_dtype_is_refused(qwen2_copy):
    """The mapped, stored-dtype path (dtype=None) is checked too."""
    poison(qwen2_copy, "model.norm.weight", [float("nan")] * 3)
    with pytest.raises(CheckpointError) as e:
        edgekit.load(qwen2_copy, dtype=None)
    assert "'model.norm.weight' has 3 non-finite" in str(e.value)


def test_an_overflow_to_a_narrower_dtype_is_refused(qwen2_copy):
    poison(qwen2_copy, "model.layers.0.self_attn.q_proj.weight", [1e6])   # fp16's largest finite value is 65504
    edgekit.load(qwen2_copy)                                              # fine in fp32
    with pytest.raises(CheckpointError) as e:
        edgekit.load(qwen2_copy, dtype=torch.float16)
    assert "'model.layers.0.self_attn.q_proj.weight' has 1 non-finite value(s) (0 NaN, 1 Inf)" in str(e.value)


def test_non_finite_gguf_weight_is_refused(qwen2_copy, tmp_path):
    poison(qwen2_copy, "model.layers.0.input_layernorm.weight", [float("nan")])
    path = write_gguf(qwen2_copy, tmp_path / "nan.gguf")
    with pytest.raises(CheckpointError) as e:
        edgekit.load(path)
    assert "nan.gguf: tensor 'blk.0.attn_norm.weight' has 1 non-finite" in str(e.value)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RssAnon is Linux's")
def test_the_finite_check_makes_no_copy_of_mapped_weights(tmp_path):
    """Loading in the stored dtype (with the finite check) keeps no converted copy: an fp32 copy of this 32 MB bf16
    embedding would hold 64 MB of anonymous memory. (A transient allocation freed before load returns is not seen
    here; finite.py's aminmax allocates none.)"""
    from checkpoints import make_checkpoint

    folder = make_checkpoint(tmp_path / "big", "llama", vocab_size=16384, hidden=1024, layers=1, heads=8,
                             kv_heads=8, intermediate=32, tied=True, with_tokenizer=False)
    state = load_file(str(folder / "model.safetensors"))
    save_file({k: v.to(torch.bfloat16) for k, v in state.items()}, str(folder / "model.safetensors"))
    del state
    before = rss_anon_mb()
    model = edgekit.load(folder, dtype=None)
    grown = rss_anon_mb() - before
    emb = model.weights["tok_embeddings.weight"]
    assert emb.dtype == torch.bfloat16 and emb.numel() * 2 == 32 << 20
    assert grown < 12, f"loading with the finite check grew anonymous memory by {grown:.1f} MB"


def rss_anon_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssAnon in /proc/self/status")
