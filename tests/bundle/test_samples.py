"""The sample apps read only manifest keys that real bundles of their target have (the Kotlin and Swift apps cannot
be built here, so this is what keeps them current)."""
from __future__ import annotations

import pytest
from sample_keys import android_keys, ios_keys, python_keys

from edgekit.bundling.manifest import get_path

PLATFORMS = {"android": android_keys, "ios": ios_keys, "linux": python_keys}


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_the_key_extraction_finds_what_the_sample_reads(platform):
    keys = PLATFORMS[platform]()
    assert {"artifact.main", "max_seq_len"} <= keys or {"artifact.main", "tokenizer.file"} <= keys, keys
    assert len(keys) >= 6, keys


def test_python_extraction_follows_aliases():
    keys = python_keys()
    assert {"io.kv_heads", "io.past_key", "tokenizer.stop_ids", "tokenizer.chat_format.before",
            "generation.temperature"} <= keys


@pytest.mark.parametrize("platform", sorted(PLATFORMS))
def test_every_key_a_sample_reads_is_in_a_real_bundle(platform, real_bundles):
    matching = [b for b in real_bundles.values() if b.manifest["target"]["platform"] == platform]
    assert matching, f"no installed target makes {platform} bundles; installed: {sorted(real_bundles)}"
    for b in matching:
        missing = []
        for key in sorted(PLATFORMS[platform]()):
            try:
                value = get_path(b.manifest, key)
            except KeyError:
                missing.append(key)
                continue
            if value is None:
                missing.append(f"{key} (null)")
        assert not missing, f"{b.name} lacks keys its sample reads: {missing}"
