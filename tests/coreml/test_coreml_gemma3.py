"""Gemma 3 as a Core ML ML program: a tiny random Gemma 3 (window 6: its sliding layers keep a ring of 6 + 32 rows in a
96-position cache) exported and run through edgekit's MIL evaluator against the eager graph, with a prefill longer
than the window (and than the ring) and decode steps that wrap the ring.

Core ML computes in fp16 (its states are fp16 and the program is converted at FLOAT16), so parity with the fp32 eager
graph is an fp16 bound, not ExecuTorch's fp32 1e-4: PARITY below, measured ~2e-3 on these logits (|logit| <= ~0.7).
A window one position too short or too long moves the logits by far more (test_a_window_off_by_one_is_caught)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from edgekit.model.config import RING_REWIND
from edgekit.model.graph import build_decoder
from edgekit.runtime.session import EagerSession
from edgekit.validate import probe_tokens, run_steps

GEMMA3_SEQ_LEN = 96             # tests/coreml/conftest.py's: the coreml_gemma3 exports' cache length
PROMPT, STEPS = 40, 50          # 40 > window 6 and > the 38-row ring; 90 positions wrap the ring twice
PARITY = 5e-3                   # fp16 program vs fp32 eager graph on this model (measured ~2e-3)


def evaluator(art):
    from edgekit_coreml import CoreMLTarget

    return CoreMLTarget().session(art, runtime="evaluator")


def eager_rows(model, tokens, window: int | None = None):
    """The eager graph's teacher-forced logits for PROMPT + STEPS (with another sliding window when given)."""
    cfg = model.config if window is None else dataclasses.replace(model.config, sliding_window=window)
    dec = build_decoder(cfg, model.weights, GEMMA3_SEQ_LEN)
    with torch.no_grad():
        return run_steps(EagerSession(dec), tokens[:PROMPT], tokens[PROMPT:])


@pytest.fixture(scope="module")
def probe(gemma3_tiny):
    return probe_tokens(gemma3_tiny.config.vocab_size, PROMPT + STEPS, seed=7)


@pytest.fixture(scope="module")
def fp16_rows(coreml_gemma3, probe):
    return run_steps(evaluator(coreml_gemma3("fp16")), probe[:PROMPT], probe[PROMPT:])


def test_fp16_program_matches_eager_past_the_window(coreml_gemma3, gemma3_tiny, probe, fp16_rows):
    v = coreml_gemma3("fp16").metadata["validation"]
    assert v["max_abs_logit_diff"] <= PARITY and v["top1_agreement_vs_reference"] == 1.0
    diff = float(np.abs(fp16_rows - eager_rows(gemma3_tiny, probe)).max())
    assert diff <= PARITY, f"max |Δlogit| {diff:.3g} > {PARITY}"


@pytest.mark.parametrize("window", [5, 7])
def test_a_window_off_by_one_is_caught(gemma3_tiny, probe, fp16_rows, window):
    """The eager graph with a window one shorter / longer is far outside PARITY of the program: a builder whose
    window were off by one would fail test_fp16_program_matches_eager_past_the_window."""
    diff = float(np.abs(fp16_rows - eager_rows(gemma3_tiny, probe, window)).max())
    assert diff > 5 * PARITY, f"window {window}: max |Δlogit| only {diff:.3g}"


@pytest.mark.parametrize("back", [1, 8, RING_REWIND])
def test_going_back_up_to_ring_rewind_positions_matches_a_fresh_cache(coreml_gemma3, gemma3_tiny, back):
    """A call starting before the cached length (a rejected speculative draft) after a 90-token prefill (longer than
    the ring, so its first positions are sliced off, never written): the rows at or after the new start are stale
    and masked, the window before it is still there; the logits are a fresh cache's."""
    vocab = gemma3_tiny.config.vocab_size
    tokens, other = probe_tokens(vocab, 90, seed=4), probe_tokens(vocab, 94, seed=5)
    end = 90
    start = end - back
    session = evaluator(coreml_gemma3("fp16"))
    session.forward(np.array([tokens[:end]]), np.arange(end))
    went_back = session.forward(np.array([other[start:start + 4]]), np.arange(start, start + 4))
    fresh = gemma3_tiny.decoder(GEMMA3_SEQ_LEN)
    with torch.no_grad():
        fresh(torch.tensor([tokens[:start]]), torch.arange(start))
        want = fresh(torch.tensor([other[start:start + 4]]), torch.arange(start, start + 4)).numpy()
    assert np.abs(went_back - want).max() <= PARITY


def test_the_sliding_layers_keep_a_ring_of_window_and_rewind_rows(coreml_gemma3, gemma3_tiny, mil_function):
    """What the device holds: 6 + 32 rows per sliding layer's K and V (config.cache_positions, as kv_cache_bytes
    counts them), written by scatter; the global layer the whole cache, written by slice_update; GeGLU's gelu."""
    art = coreml_gemma3("fp16")
    fn = mil_function(art)
    rows = {n: v.sym_type.wrapped_type().get_shape()[2] for n, v in fn.inputs.items()
            if v.sym_type.__name__.startswith("state")}
    assert rows == {f"layers_{i}_attention_attend_{kv}_cache": 6 + RING_REWIND if i < 2 else GEMMA3_SEQ_LEN
                    for i in range(3) for kv in "kv"}
    assert art.metadata["io"]["states"]["shapes"]["layers_0_attention_attend_k_cache"][2] == 6 + RING_REWIND
    # the fp16 states hold exactly what `edgekit info` counts for this context
    held = sum(2 * int(np.prod(v.sym_type.wrapped_type().get_shape())) for n, v in fn.inputs.items() if n in rows)
    assert held == gemma3_tiny.config.kv_cache_bytes(GEMMA3_SEQ_LEN, "fp16")
    ops = [o.op_type for o in fn.operations]
    assert ops.count("scatter") == 4 and ops.count("slice_update") == 2
    assert ops.count("scaled_dot_product_attention") == 3 and "softmax" not in ops
    gelus = [o for o in fn.operations if o.op_type == "gelu"]
    assert len(gelus) == 3 and {o.inputs["mode"].val for o in gelus} == {"TANH_APPROXIMATION"}


@pytest.mark.parametrize(("quant", "options"), [("w4", {}), ("w8", {}), ("w4", {"granularity": "per_channel"})])
def test_quantized_program_matches_its_reference_past_the_window(coreml_gemma3, gemma3_tiny, probe, quant, options):
    """The quantized exports validate (export's own prefill + 8 steps) and, past the window, stay within PARITY of
    the eager graph carrying the same dequantized weights (the target's reference)."""
    from edgekit_coreml import CoreMLTarget

    from edgekit.targets.base import TargetSpec

    art = coreml_gemma3(quant, **options)
    v = art.metadata["validation"]
    assert v["max_abs_logit_diff"] <= PARITY and v["top1_agreement_vs_reference"] == 1.0
    spec = TargetSpec(quant=quant, max_seq_len=GEMMA3_SEQ_LEN, options=options)
    ref = CoreMLTarget().reference(gemma3_tiny, spec)
    got = run_steps(evaluator(art), probe[:PROMPT], probe[PROMPT:])
    with torch.no_grad():
        want = run_steps(EagerSession(ref), probe[:PROMPT], probe[PROMPT:])
    assert float(np.abs(got - want).max()) <= PARITY


@pytest.fixture(scope="module")
def gemma3_gguf(tmp_path_factory):
    """A 6-layer tiny Gemma 3 (llama.cpp's pattern: layer 5 global, 0-4 sliding, window 6) written as a GGUF of mixed
    block types, as gguf_llama: asymmetric Q4_1 (the tied embedding too: its gather carries the correction, then the
    embed scale), symmetric Q4_0 / Q8_0 and a Q5_0 widened to int8."""
    import sys
    from pathlib import Path

    from checkpoints import make_checkpoint
    from gguf import GGMLQuantizationType as Q

    import edgekit

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
    from gguf_files import write_gguf

    root = tmp_path_factory.mktemp("coreml-gemma3-gguf")
    ckpt = make_checkpoint(root / "hf", "gemma3", layers=6, global_every=6, sliding_window=6, seed=6,
                           query_pre_attn_scalar=16)
    types = {"attn_q.weight": Q.Q4_1, "attn_k.weight": Q.Q4_0, "attn_v.weight": Q.Q8_0, "attn_output.weight": Q.Q4_1,
             "ffn_gate.weight": Q.Q4_1, "ffn_up.weight": Q.Q4_1, "ffn_down.weight": Q.Q5_0,
             "token_embd.weight": Q.Q4_1}
    return edgekit.load(write_gguf(ckpt, root / "gemma3.gguf", types=types))


def test_source_grids_compute_the_files_gemma3_past_the_window(gemma3_gguf, tmp_path):
    """quant 'source' keeps the file's grids; past the window the program stays within PARITY of the fp32 eager graph
    of the file's own dequantized weights (the reference)."""
    from edgekit_coreml import CoreMLTarget

    import edgekit
    from edgekit.targets.base import TargetSpec

    assert gemma3_gguf.config.layer_types.count("sliding_attention") == 5
    art = edgekit.export(gemma3_gguf, "ios", quant="source", max_seq_len=GEMMA3_SEQ_LEN, out=tmp_path / "a",
                         show_progress=False, evaluate=False)
    record = art.metadata["source_grids"]
    assert set(record["kept"]) == {"gguf:Q4_1", "gguf:Q4_0", "gguf:Q8_0", "gguf:Q5_0"} and record["float"] == []
    assert art.metadata["validation"]["max_abs_logit_diff"] <= PARITY
    probe = probe_tokens(gemma3_gguf.config.vocab_size, PROMPT + STEPS, seed=7)
    ref = CoreMLTarget().reference(gemma3_gguf, TargetSpec(quant="source", max_seq_len=GEMMA3_SEQ_LEN))
    got = run_steps(evaluator(art), probe[:PROMPT], probe[PROMPT:])
    with torch.no_grad():
        want = run_steps(EagerSession(ref), probe[:PROMPT], probe[PROMPT:])
    assert float(np.abs(got - want).max()) <= PARITY


@pytest.fixture(scope="module")
def loud_gemma3(tmp_path_factory):
    """The tiny Gemma 3 with post-MLP norm multipliers of 20,000: its residual stream passes fp16's 65,504 (as the
    real 270M's massive activations do on real text), while every norm reading it keeps the logits ordinary."""
    from checkpoints import make_checkpoint
    from safetensors.torch import load_file, save_file

    import edgekit

    path = make_checkpoint(tmp_path_factory.mktemp("gemma3-loud") / "gemma3", "gemma3", layers=3, sliding_window=6,
                           seed=5)
    weights = load_file(str(path / "model.safetensors"))
    for name in weights:
        if name.endswith("post_feedforward_layernorm.weight"):
            weights[name] = torch.full_like(weights[name], 20000.0 - 1.0)   # HF stores w of x * (1 + w)
    save_file(weights, str(path / "model.safetensors"), metadata={"format": "pt"})
    return edgekit.load(path)


def test_a_residual_stream_beyond_fp16_stays_finite(loud_gemma3, tmp_path):
    """The program holds the stream as x / 32 (builder.residual_scale): without that, the first add past 65,504 is
    inf and every later logit NaN."""
    import edgekit

    tokens = probe_tokens(loud_gemma3.config.vocab_size, PROMPT + STEPS, seed=7)
    dec = loud_gemma3.decoder(GEMMA3_SEQ_LEN)
    peak = []
    hooks = [layer.register_forward_hook(lambda m, i, out: peak.append(float(out.abs().max()))) for layer in dec.layers]
    with torch.no_grad():
        want = run_steps(EagerSession(dec), tokens[:PROMPT], tokens[PROMPT:])
    for h in hooks:
        h.remove()
    assert max(peak) > 65504, max(peak)   # the premise: fp16 could not hold this stream (measured 126,000)
    art = edgekit.export(loud_gemma3, "ios", quant="fp16", max_seq_len=GEMMA3_SEQ_LEN, out=tmp_path / "a",
                         show_progress=False, evaluate=False)
    got = run_steps(evaluator(art), tokens[:PROMPT], tokens[PROMPT:])
    assert np.isfinite(got).all()
    assert float(np.abs(got - want).max()) <= PARITY * max(1.0, float(np.abs(want).max()))


def test_a_chunk_longer_than_the_ring_after_a_first_one(coreml_gemma3, gemma3_tiny):
    """Prefill in two calls, the second (50 tokens from position 10) longer than the 38-row ring: its first rows are
    attended but never written, the cached ones before it still are; then decode."""
    tokens = probe_tokens(gemma3_tiny.config.vocab_size, 70, seed=9)
    session, dec = evaluator(coreml_gemma3("fp16")), gemma3_tiny.decoder(GEMMA3_SEQ_LEN)
    calls = [(0, 10), (10, 60)] + [(p, p + 1) for p in range(60, 70)]
    for a, b in calls:
        got = session.forward(np.array([tokens[a:b]]), np.arange(a, b))
        with torch.no_grad():
            want = dec(torch.tensor([tokens[a:b]]), torch.arange(a, b)).numpy()
        assert np.abs(got[:, -1] - want[:, -1]).max() <= PARITY, (a, b)
