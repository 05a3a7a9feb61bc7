"""Fixtures for the kernel tests: the compiled ExecuTorch kernel library (built once, cached by content hash)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def kernel_lib():
    pytest.importorskip("executorch", reason="the compiled kernels need the executorch wheel")
    from edgekit_executorch.kernels import load_kernel_library

    return load_kernel_library()


@pytest.fixture(scope="session")
def et_int8(tiny_model, tmp_path_factory, kernel_lib):
    """The tiny qwen2 checkpoint exported for ExecuTorch with the int8 KV cache (edgekit's kernel library), once."""
    import edgekit

    out = tmp_path_factory.mktemp("et-int8") / "artifact"
    return edgekit.export(tiny_model("qwen2"), "android", quant="fp32", max_seq_len=64, kv_cache="int8", out=out,
                          show_progress=False)
