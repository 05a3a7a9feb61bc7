"""Fixtures for the foundation tests: extra checkpoint cases, GGUF conversions, transformers references."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from checkpoints import make_checkpoint
from gguf_files import write_gguf

EXTRA_CASES = {
    "llama_tied": ("llama", {"tied": True, "seed": 3}),
    "qwen2_sharded": ("qwen2", {"shard_size": "200KB", "seed": 4}),
    # a window of 6 under the parity tests' 7-token prefill and 64-position cache: the ring wraps in prefill and decode
    "gemma3": ("gemma3", {"layers": 3, "sliding_window": 6, "seed": 5}),
    # as llama.cpp reads a gemma3 GGUF: every 6th layer global, query_pre_attn_scalar = head_dim
    "gemma3_pattern6": ("gemma3", {"layers": 6, "global_every": 6, "sliding_window": 6, "seed": 6,
                                   "query_pre_attn_scalar": 16}),
}
PARITY_CASES = ["llama", "qwen2", "qwen3", "llama_tied", "qwen2_sharded", "gemma3"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tests check numbers, not speed. On this shared 2-core machine torch's 2-thread OpenMP runs 5-30x slower
    than 1 thread whenever other processes compete for the cores (measured: SmolLM2 decode step 5.1 s vs 0.36 s)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ckpt(checkpoint_dir, tmp_path_factory):
    """Factory: checkpoint folder for a root case (llama, qwen2, qwen3) or an extra one (tied llama, sharded qwen2)."""
    made: dict[str, Path] = {}

    def get(case: str) -> Path:
        if case not in EXTRA_CASES:
            return checkpoint_dir(case)
        if case not in made:
            family, kwargs = EXTRA_CASES[case]
            made[case] = make_checkpoint(tmp_path_factory.mktemp(case) / case, family, **kwargs)
        return made[case]

    return get


@pytest.fixture(scope="session")
def hf_model():
    """Factory: transformers' own model for a checkpoint folder (fp32, eager attention), cached per path."""
    import torch
    from transformers import AutoModelForCausalLM

    cache: dict[tuple, object] = {}

    def get(path: Path, gguf_file: str | None = None, config_from: Path | None = None):
        """config_from: take the config from this HF folder (transformers' GGUF mapping misses qwen3's head_dim)."""
        key = (str(path), gguf_file)
        if key not in cache:
            kwargs = {}
            if gguf_file:
                from transformers import AutoConfig, GgufConfig

                kwargs = {"gguf_file": gguf_file, "quantization_config": GgufConfig(dequantize=True)}
                if config_from is not None:
                    kwargs["config"] = AutoConfig.from_pretrained(config_from)
            cache[key] = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager",
                                                              **kwargs).eval()
        return cache[key]

    return get


@pytest.fixture(scope="session")
def tiny_gguf(ckpt, tmp_path_factory):
    """Factory: (folder, file name) of a GGUF converted from a case's checkpoint with the given types."""
    made: dict[tuple, tuple[Path, str]] = {}

    def get(case: str, name: str = "model", **kwargs) -> tuple[Path, str]:
        key = (case, name)
        if key not in made:
            folder = tmp_path_factory.mktemp(f"gguf-{case}-{name}")
            write_gguf(ckpt(case), folder / f"{name}.gguf", **kwargs)
            made[key] = (folder, f"{name}.gguf")
        return made[key]

    return get


@pytest.fixture(scope="session")
def smollm2_dir(smollm2_path, tmp_path_factory) -> Path:
    """A folder holding (a link to) the SmolLM2 GGUF, as transformers' from_pretrained(dir, gguf_file=) wants."""
    folder = tmp_path_factory.mktemp("smollm2")
    (folder / "smollm2.gguf").symlink_to(smollm2_path)
    return folder


@pytest.fixture(scope="session")
def smollm2_hf(smollm2_dir, hf_model):
    """transformers' LlamaForCausalLM on the same GGUF, dequantized by transformers itself."""
    return hf_model(smollm2_dir, "smollm2.gguf")


@pytest.fixture(scope="session")
def smollm2_hf_tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir, gguf_file="smollm2.gguf")
