"""Fixtures for the bundle tests: the fake target registered for this folder, tiny bundles (fault tests), and
SmolLM2-135M bundles for every real target that is installed (one export each, shared)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import fake_target

MAX_SEQ_LEN = 64


@pytest.fixture(scope="package", autouse=True)
def with_fake_target():
    """get_target() sees the fake targets (beside the real plugins) while this folder's tests run."""
    from edgekit.targets import registry

    saved = registry._installed
    fake_target.install()
    yield
    registry._installed = saved


@pytest.fixture(scope="package")
def tiny_llama(checkpoint_dir):
    import edgekit

    return edgekit.load(checkpoint_dir("llama"))


@pytest.fixture(scope="package")
def fake_bundle(tiny_llama, tmp_path_factory) -> Path:
    """A bundle folder of the tiny llama for the fake target (weights + config, a kernel source, a runner)."""
    import edgekit

    b = edgekit.bundle(tiny_llama, target="fake", out=tmp_path_factory.mktemp("dist"), max_seq_len=MAX_SEQ_LEN)
    return b.path


@pytest.fixture(scope="package")
def fake_zip(tiny_llama, tmp_path_factory) -> Path:
    import edgekit

    b = edgekit.bundle(tiny_llama, target="fake", out=tmp_path_factory.mktemp("dist"), max_seq_len=MAX_SEQ_LEN,
                       zip=True)
    return b.source


@pytest.fixture
def bundle_copy(fake_bundle, tmp_path) -> Path:
    """A private copy of the fake bundle, for a test to damage."""
    dst = tmp_path / fake_bundle.name
    shutil.copytree(fake_bundle, dst)
    return dst


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """Where .zip bundles unpack during a test (never the user's cache)."""
    d = tmp_path / "cache"
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(d))
    monkeypatch.delenv("EDGEKIT_CACHE", raising=False)
    return d


@pytest.fixture(scope="package")
def real_targets():
    """Every installed real target plugin (the fake ones excluded)."""
    from edgekit.targets.registry import targets

    return [t for t in targets() if not isinstance(t, fake_target.FakeTarget)]


@pytest.fixture(scope="package")
def real_bundles(smollm2_bundle, real_targets) -> dict:
    """SmolLM2-135M bundled for every installed real target: the session's shared bundles (tests/conftest.py's
    smollm2_bundle, also used by tests/profile), one export per target from one loaded model.

    Export validation is skipped there (each target's own tests validate its export; the fake-target tests check that
    validation figures reach the manifest); test_real_bundles runs every host-runnable bundle against the eager
    reference instead."""
    assert real_targets, "no real target is installed (pip install -e targets/onnx ...)"
    return {t.name: smollm2_bundle(t.name) for t in real_targets}
