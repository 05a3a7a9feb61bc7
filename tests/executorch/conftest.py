"""Session-scoped ExecuTorch exports shared by every test in this folder (exports take tens of seconds each)."""
from __future__ import annotations

import pytest

MAX_SEQ_LEN = 64          # small: the tiny checkpoints and the cache stay small, lowering stays quick
SMOLLM2_MAX_SEQ_LEN = 96


@pytest.fixture(scope="session")
def exported(tiny_model, tmp_path_factory):
    """Factory: (case, quant) -> validated Artifact of the tiny checkpoint, exported once per session."""
    import edgekit

    made = {}

    def get(case: str, quant: str):
        if (case, quant) not in made:
            out = tmp_path_factory.mktemp(f"et-{case}-{quant}") / "artifact"
            made[case, quant] = edgekit.export(tiny_model(case), "android", quant=quant, max_seq_len=MAX_SEQ_LEN,
                                               out=out, show_progress=False)
        return made[case, quant]

    return get


@pytest.fixture(scope="session")
def smollm2_artifact(smollm2, tmp_path_factory):
    """SmolLM2-135M (real weights), 8da4w g32 + 8-bit embedding, last-position logits only; validated on export."""
    import edgekit

    out = tmp_path_factory.mktemp("et-smollm2") / "artifact"
    return edgekit.export(smollm2, "android", quant="8da4w", max_seq_len=SMOLLM2_MAX_SEQ_LEN, last_logits_only=True,
                          out=out, show_progress=False, embedding_bits=8, group_size=32)


@pytest.fixture(scope="session")
def w8_variant(tiny_model, tmp_path_factory):
    """One export through the other paths: 8da8w, 4-bit embedding, 8-bit output layer, edgekit's own attention
    (index_copy cache + SDPA, no ExecuTorch LLM ops), full logits."""
    import edgekit

    out = tmp_path_factory.mktemp("et-qwen2-w8") / "artifact"
    return edgekit.export(tiny_model("qwen2"), "android", quant="8da8w", max_seq_len=MAX_SEQ_LEN, out=out,
                          show_progress=False, embedding_bits=4, output_bits=8, custom_sdpa=False)
