"""Gemma 3 as a .pte: a tiny random Gemma 3 (window 6, so a 40-token prefill and 30 decode steps wrap the 38-row ring
twice) exported, run in ExecuTorch's runtime and compared with the eager graph: fp32 within 1e-4, 8da4w (edgekit's
int4 kernels, int8 caches on the global layers) within the quantized reference's own noise.

The quality gate is off here: these weights are random, so a KL on real text says nothing about the export; the
real 270M's quality is measured in benchmarks/ (bench_gemma3.py)."""
from __future__ import annotations

import pytest
from checkpoints import make_checkpoint
from greedy import check_greedy

import edgekit
from edgekit.model.graph import RingCachedAttention

PROMPT, STEPS, MAX_SEQ_LEN = 40, 30, 96


@pytest.fixture(scope="module")
def gemma_tiny(tmp_path_factory):
    return edgekit.load(make_checkpoint(tmp_path_factory.mktemp("gemma3") / "gemma3", "gemma3", layers=3,
                                        sliding_window=6, seed=5))


@pytest.fixture(scope="module")
def gemma_exports(gemma_tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("et-gemma3")
    kw = {"max_seq_len": MAX_SEQ_LEN, "show_progress": False, "evaluate": False}
    return {
        "fp32": edgekit.export(gemma_tiny, "android", quant="fp32", out=out / "fp32", **kw),
        "8da4w": edgekit.export(gemma_tiny, "android", quant="8da4w", out=out / "q4", linear_kernel="edgekit",
                                kv_cache="int8", **kw),
    }


def test_fp32_pte_matches_eager_past_the_window(gemma_tiny, gemma_exports):
    art = gemma_exports["fp32"]
    assert art.metadata["validation"]["max_abs_logit_diff"] <= 1e-4
    diff, _ = check_greedy("android", gemma_tiny, art, prompt_len=PROMPT, tolerance=1e-4, steps=STEPS)
    assert diff <= 1e-4


def test_8da4w_pte_matches_its_quantized_reference(gemma_tiny, gemma_exports):
    art = gemma_exports["8da4w"]
    check_greedy("android", gemma_tiny, art, prompt_len=PROMPT, steps=STEPS, floor_factor=2.0)
    meta = art.metadata
    assert meta["quantization"]["scheme"] == "8da4w" and meta["quantization"]["linear_kernel"] == "edgekit"
    assert meta["kv_cache"] == "int8" and meta["custom_op_libraries"] == ["kernels/libedgekit_kernels.so"]


def test_the_sliding_layers_keep_their_ring_in_the_program(gemma_tiny):
    """What the runtime holds: the ExecuTorch decoder's sliding layers keep 6 + 32 (+1 spare) rows, the global layer
    the whole cache, int8 when asked."""
    from edgekit_executorch.export import build_decoder

    from edgekit.targets.base import TargetSpec

    spec = TargetSpec(quant="8da4w", max_seq_len=MAX_SEQ_LEN, kv_cache="int8", options={"linear_kernel": "edgekit"})
    dec = build_decoder(gemma_tiny, spec, for_export=True)
    attends = [layer.attention.attend for layer in dec.layers]
    assert [isinstance(a, RingCachedAttention) for a in attends] == [True, True, False]
    assert attends[0].kv_cache.k_cache.shape[1] == 39
    assert attends[2].k_cache.shape[1] == MAX_SEQ_LEN and str(attends[2].k_cache.dtype) == "torch.int8"
