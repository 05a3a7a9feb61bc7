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
