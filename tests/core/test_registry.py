"""Target registry: unknown names list what is installed; a broken plugin is reported, not fatal for the others."""
from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from edgekit.errors import UnknownTarget
from edgekit.targets import registry


def test_unknown_target_lists_installed():
    with pytest.raises(UnknownTarget) as e:
        registry.get_target("tflite")
    msg = str(e.value)
    assert "'tflite'" in msg and "installed:" in msg
    for t in registry.targets():
        assert t.name in msg


def test_broken_plugin_does_not_hide_the_others(monkeypatch):
    real = list(registry.entry_points(group=registry.GROUP))
    broken = EntryPoint(name="tpu", value="edgekit_no_such_module:Target", group=registry.GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [*real, broken])
    monkeypatch.setattr(registry, "BROKEN", {})
    loaded = registry.load_plugins()
    monkeypatch.setattr(registry, "_installed", lambda: loaded)
    assert set(loaded) == {ep.name for ep in real}
    assert "edgekit_no_such_module" in registry.BROKEN["tpu"]
    with pytest.raises(UnknownTarget, match=r"'tpu' is installed but its plugin failed to load .*edgekit_no_such"):
        registry.get_target("tpu")
