"""`edgekit generate MODEL --target android` runs the host generation loop on a .pte."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.slow


def test_generate_with_artifact(exported, checkpoint_dir):
    from edgekit.cli import cli

    art = exported("llama", "8da4w")
    r = CliRunner().invoke(cli, ["generate", str(checkpoint_dir("llama")), "--target", "android", "--artifact",
                                 str(art.path), "--prompt", "The quick", "--max-new-tokens", "5"])
    assert r.exit_code == 0, r.output
    assert "tokens, stop:" in r.output
