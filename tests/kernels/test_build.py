"""The on-first-use builder: content-hash cache hits, and a missing compiler is a clear MissingDependency."""
from __future__ import annotations

import pytest

from edgekit.errors import MissingDependency


def test_build_is_cached_by_content_hash(kernel_lib, monkeypatch):
    from edgekit_executorch.kernels import build

    first = build.build_kernel_library()
    mtime = first.stat().st_mtime_ns
    calls = []
    real_run = build.core_build.subprocess.run
    monkeypatch.setattr(build.core_build.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or real_run(cmd, **kw))
    again = build.build_kernel_library()
    assert again == first and again.stat().st_mtime_ns == mtime
    assert not any(str(build.CSRC / build.ET_SOURCE) in c for c in calls)  # only `g++ --version`, no compile
    assert first.parent.name == build.content_hash(build.find_compiler())


def test_missing_compiler_is_a_clear_error(monkeypatch, tmp_path):
    from edgekit_executorch.kernels import build

    monkeypatch.setenv("CXX", "")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingDependency, match="C\\+\\+ compiler"):
        build.build_kernel_library()
