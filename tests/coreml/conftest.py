"""Core ML fixtures: exports shared per session (each costs ~10-30 s of coremltools conversion)."""
from __future__ import annotations

import pytest

MAX_SEQ_LEN = 32          # tiny models: short caches keep conversion and the numpy evaluator fast
SMOLLM2_SEQ_LEN = 96      # 8 prompt tokens + 64 teacher-forced tokens fit
# Gemma 3: a cache longer than the sliding layers' ring (window 6 + RING_REWIND 32 = 38 rows), so it wraps
GEMMA3_SEQ_LEN = 96


@pytest.fixture(scope="session")
def coreml_export(tiny_model, tmp_path_factory):
    """Factory: edgekit.export(tiny_model(case), "ios", quant=..., **options), validated, built once per key."""
    import edgekit

    made = {}

    def get(case: str, quant: str = "fp16", **options):
        key = (case, quant, tuple(sorted(options.items())))
        if key not in made:
            out = tmp_path_factory.mktemp(f"coreml-{case}-{quant}") / "artifact"
            made[key] = edgekit.export(tiny_model(case), "ios", quant=quant, max_seq_len=MAX_SEQ_LEN, out=out,
                                       show_progress=False, **options)
        return made[key]

    return get


@pytest.fixture(scope="session")
def smollm2_coreml(smollm2, tmp_path_factory):
    """SmolLM2-135M exported at fp16. Export's own 8-step validation is skipped: test_smollm2 checks the same
    quantity (max |Δlogit| vs the eager graph, within the target's tolerance) over 64 teacher-forced steps."""
    import edgekit

    out = tmp_path_factory.mktemp("coreml-smollm2") / "artifact"
    return edgekit.export(smollm2, "ios", quant="fp16", max_seq_len=SMOLLM2_SEQ_LEN, out=out, show_progress=False,
                          validate=False)


@pytest.fixture(scope="session")
def gemma3_tiny(tmp_path_factory):
    """A tiny random Gemma 3 (tests/core/conftest.py's "gemma3" case): 3 layers, the first two sliding with a window
    of 6, query_pre_attn_scalar head_dim + 8, random norms."""
    from checkpoints import make_checkpoint

    import edgekit

    return edgekit.load(make_checkpoint(tmp_path_factory.mktemp("gemma3") / "gemma3", "gemma3", layers=3,
                                        sliding_window=6, seed=5))


@pytest.fixture(scope="session")
def coreml_gemma3(gemma3_tiny, tmp_path_factory):
    """Factory: gemma3_tiny exported to Core ML at `quant` (validated by export: prefill + 8 decode steps), once each."""
    import edgekit

    made = {}

    def get(quant: str = "fp16", **options):
        key = (quant, tuple(sorted(options.items())))
        if key not in made:
            out = tmp_path_factory.mktemp(f"coreml-gemma3-{quant}") / "artifact"
            # no quality gate: a KL on real text says nothing about random weights (the parity tests check them)
            made[key] = edgekit.export(gemma3_tiny, "ios", quant=quant, max_seq_len=GEMMA3_SEQ_LEN, out=out,
                                       show_progress=False, evaluate=False, **options)
        return made[key]

    return get


@pytest.fixture(scope="session")
def mil_function():
    """artifact -> the pymil Function read back from its saved model.mlpackage (cached per artifact path)."""
    from edgekit_coreml.mil.program import load_program

    cache = {}

    def get(artifact):
        key = str(artifact.main_file)
        if key not in cache:
            cache[key] = load_program(artifact.main_file)[0]
        return cache[key]

    return get


@pytest.fixture(scope="session")
def gguf_llama(checkpoint_dir, tmp_path_factory):
    """The tiny llama checkpoint written as a GGUF of mixed block types: asymmetric Q4_1 (the embedding too, so its
    gather carries the correction), symmetric Q4_0 / Q8_0 and a Q5_0 widened to int8."""
    import sys
    from pathlib import Path

    from gguf import GGMLQuantizationType as Q

    import edgekit

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
    from gguf_files import write_gguf

    types = {"attn_q.weight": Q.Q4_1, "attn_k.weight": Q.Q4_0, "attn_v.weight": Q.Q8_0, "attn_output.weight": Q.Q4_1,
             "ffn_gate.weight": Q.Q4_1, "ffn_up.weight": Q.Q4_1, "ffn_down.weight": Q.Q5_0,
             "token_embd.weight": Q.Q4_1, "output.weight": Q.Q8_0}
    path = write_gguf(checkpoint_dir("llama"), tmp_path_factory.mktemp("coreml-gguf") / "llama.gguf", types=types)
    return edgekit.load(path)


@pytest.fixture(scope="session")
def coreml_source(gguf_llama, tmp_path_factory):
    """gguf_llama exported with quant 'source' (validated by export against the reference, prefill + 8 steps)."""
    import edgekit

    out = tmp_path_factory.mktemp("coreml-source") / "artifact"
    return edgekit.export(gguf_llama, "ios", quant="source", max_seq_len=MAX_SEQ_LEN, last_logits_only=False,
                          out=out, show_progress=False)
