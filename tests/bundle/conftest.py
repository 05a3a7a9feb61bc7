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
    monkeypatch.setenv("EDGEKIT_CACHE", str(d))
    return d


REAL_MAX_SEQ_LEN = 64
# ExecuTorch's default 8da4w export of SmolLM2 did not finish within 37 min on the loaded shared machine; fp32 lowers
# without the quantization passes. Every other target uses its default scheme.
REAL_QUANT = {"executorch": "fp32"}


@pytest.fixture(scope="package")
def real_targets():
    """Every installed real target plugin (the fake ones excluded)."""
    from edgekit.targets.registry import targets

    return [t for t in targets() if not isinstance(t, fake_target.FakeTarget)]


@pytest.fixture(scope="package")
def real_bundles(smollm2, real_targets, tmp_path_factory) -> dict:
    """SmolLM2-135M bundled for every installed real target in ONE call (one load), each with its default quant.

    Export validation is skipped here to keep the folder's time down (each target's own tests validate its export;
    the fake-target tests check that validation figures reach the manifest); test_real_bundles runs every host-runnable
    bundle against the eager reference instead."""
    import edgekit

    assert real_targets, "no real target is installed (pip install -e targets/onnx ...)"
    out = tmp_path_factory.mktemp("real")
    made = [edgekit.bundle(smollm2, target=t.name, out=out, quant=REAL_QUANT.get(t.name), max_seq_len=REAL_MAX_SEQ_LEN,
                           validate=False) for t in real_targets]  # one loaded model, one export per target
    return {b.manifest["target"]["name"]: b for b in made}
