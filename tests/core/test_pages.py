"""Weights kept in their stored dtype are views of the checkpoint file's pages; pages.release() gives those pages back
to the kernel without changing a single value (the ExecuTorch export does it after quantizing: a 0.5B bf16 model's
1 GB no longer sits in the lowering peak)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from edgekit.model import pages
from edgekit.model.checkpoint import iter_safetensors

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RssFile and MADV_PAGEOUT are Linux's")

ROWS, COLS = 8192, 2048   # 32 MB in bf16: far above the noise of a process's file-backed RSS


def rss_file_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no RssFile in /proc/self/status")


@pytest.fixture(scope="module")
def big_bf16_checkpoint(tmp_path_factory):
    """A llama checkpoint whose embedding is 32 MB of bf16 (the rest tiny), and the model's config."""
    from safetensors.torch import save_file

    from edgekit.model.config import ModelConfig

    raw = {"model_type": "llama", "vocab_size": ROWS, "hidden_size": COLS, "intermediate_size": 32,
           "num_hidden_layers": 1, "num_attention_heads": 16, "num_key_value_heads": 16, "rms_norm_eps": 1e-6,
           "max_position_embeddings": 64, "tie_word_embeddings": True, "architectures": ["LlamaForCausalLM"]}
    cfg = ModelConfig.from_hf(raw)
    from edgekit.model.checkpoint import expected_shapes
    from edgekit.model.families import HF_NAMES, source_name_map

    names = {canon: src for src, canon in source_name_map(HF_NAMES, list(expected_shapes(cfg))).items()}
    g = torch.Generator().manual_seed(0)
    tensors = {names[c]: torch.randn(*shape, generator=g).to(torch.bfloat16) for c, shape in expected_shapes(cfg).items()}
    folder = tmp_path_factory.mktemp("bigbf16")
    save_file(tensors, str(folder / "model.safetensors"))
    return folder, cfg, {c: tensors[names[c]] for c in expected_shapes(cfg)}


def load(folder: Path, cfg, dtype) -> dict[str, torch.Tensor]:
    return dict(iter_safetensors(folder, cfg, dtype))


def test_stored_dtype_tensors_are_file_pages_read_on_first_use(big_bf16_checkpoint):
    folder, cfg, expected = big_bf16_checkpoint
    before = rss_file_mb()
    weights = load(folder, cfg, None)
    emb = weights["tok_embeddings.weight"]
    assert emb.dtype == torch.bfloat16 and emb.shape == (ROWS, COLS)
    assert rss_file_mb() - before < 8, "loading must not read the weights (they are mapped, read on first use)"
    for name, t in expected.items():
        assert torch.equal(weights[name], t), name
    assert rss_file_mb() - before > 28, "reading the 32 MB embedding through the map must fault its pages in"


def test_release_returns_the_pages_and_keeps_every_value(big_bf16_checkpoint):
    folder, cfg, expected = big_bf16_checkpoint
    weights = load(folder, cfg, torch.bfloat16)
    emb = weights["tok_embeddings.weight"]
    checksum = emb.float().sum().item()
    touched = rss_file_mb()
    advised = pages.release(weights.values())
    assert advised >= ROWS * COLS * 2 - 2 * 4096
    assert touched - rss_file_mb() > 28, f"release() gave back {touched - rss_file_mb():.1f} MB, expected ~32"
    assert emb.float().sum().item() == checksum
    assert torch.equal(emb, expected["tok_embeddings.weight"])


def test_a_weight_written_in_place_survives_release(big_bf16_checkpoint):
    """The map is copy-on-write and MADV_PAGEOUT only reclaims what can be re-read: a written page is never lost."""
    folder, cfg, _ = big_bf16_checkpoint
    emb = load(folder, cfg, None)["tok_embeddings.weight"]
    emb[100].fill_(3.0)
    pages.release([emb])
    assert torch.all(emb[100] == 3.0)
    assert not torch.all(load(folder, cfg, None)["tok_embeddings.weight"][100] == 3.0), "the file must be unchanged"


def test_a_converted_dtype_is_read_into_memory_not_mapped(big_bf16_checkpoint):
    folder, cfg, expected = big_bf16_checkpoint
    before = rss_file_mb()
    weights = load(folder, cfg, torch.float32)
    assert weights["tok_embeddings.weight"].dtype == torch.float32
    assert torch.equal(weights["tok_embeddings.weight"], expected["tok_embeddings.weight"].float())
    assert rss_file_mb() - before < 8, "a converted tensor must not leave the file's pages mapped"


def test_release_is_harmless_on_ordinary_memory():
    t = torch.arange(1 << 20, dtype=torch.float32)
    pages.release([t, t[::2], torch.empty(0)])
    assert torch.equal(t, torch.arange(1 << 20, dtype=torch.float32))
