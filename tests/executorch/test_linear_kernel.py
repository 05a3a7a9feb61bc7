"""linear_kernel 'edgekit': every 8da4w linear of the .pte runs in edgekit's own kernel (edgekit::qkv_rope_q4 /
fused_linear_q4 per layer, norms, rotary, SwiGLU and residuals fused in), validated like any export, and its greedy
continuation equals the quantized eager graph's: every family (tiny random checkpoints) and SmolLM2-135M."""
from __future__ import annotations

import pytest
from test_parity import FAMILIES, _check_greedy

import edgekit

MAX_SEQ_LEN, SMOLLM2_MAX_SEQ_LEN = 64, 96  # as conftest.py


@pytest.fixture(scope="session")
def edgekit_kernel_export(tiny_model, tmp_path_factory):
    made = {}

    def get(case: str):
        if case not in made:
            out = tmp_path_factory.mktemp(f"et-{case}-q4") / "artifact"
            made[case] = edgekit.export(tiny_model(case), "android", quant="8da4w", max_seq_len=MAX_SEQ_LEN, out=out,
                                        show_progress=False, linear_kernel="edgekit")
        return made[case]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("case", FAMILIES)
def test_edgekit_kernel_export_matches_quantized_eager(edgekit_kernel_export, tiny_model, case):
    art = edgekit_kernel_export(case)
    meta = art.metadata
    assert meta["validation"]["max_abs_logit_diff"] <= 1e-2          # validated on export against the eager graph
    _check_greedy(tiny_model(case), art)
    assert meta["quantization"]["linear_kernel"] == "edgekit"
    layers = tiny_model(case).config.num_layers
    # 4 int4 calls per layer + the output layer, and the attention (attention_kernel defaults to edgekit with it),
    # which writes the caches itself (so the summary, taken before ExecuTorch removes the functional wrappers, counts
    # it as auto_functionalized_v2): no slices of the projection, no llama::update_cache, no start-position read
    ops = meta["delegation"]["portable_ops"]
    assert ops["edgekit"] == 4 * layers + 1 and ops["auto_functionalized_v2"] == layers, ops
    assert meta["attention"] == "edgekit::qkv_cache_attention (fp32 cache, written by the op)"
    assert "llama" not in ops and "slice_copy" not in ops and "_local_scalar_dense" not in ops, ops
    assert meta["delegation"]["delegated_subgraphs"] == 0                     # nothing left for XNNPACK
    assert meta["custom_op_libraries"], "the .pte needs edgekit's kernel library; the artifact must say which"


@pytest.mark.slow
def test_edgekit_kernel_smollm2_matches_quantized_eager(smollm2, tmp_path_factory):
    """Real weights (576 wide: group 64), 8-bit embedding; the greedy chat continuation against the quantized eager
    graph, within twice the reference's own noise floor (see test_parity)."""
    out = tmp_path_factory.mktemp("et-smollm2-q4") / "artifact"
    art = edgekit.export(smollm2, "android", quant="8da4w", max_seq_len=SMOLLM2_MAX_SEQ_LEN, last_logits_only=True,
                         out=out, show_progress=False, embedding_bits=8, linear_kernel="edgekit")
    v = art.metadata["validation"]
    assert v["tolerance"] < 10.0
    chat_ids = smollm2.tokenizer.encode(smollm2.tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}]))
    _check_greedy(smollm2, art, tolerance=v["tolerance"], prompt=chat_ids, floor_factor=2.0)
    assert art.metadata["delegation"]["portable_ops"]["edgekit"] == 4 * smollm2.config.num_layers + 1
    assert art.metadata["attention"] == "edgekit::qkv_cache_attention (fp32 cache, written by the op)"


@pytest.mark.slow
def test_edgekit_kernel_ops_are_profiled(edgekit_kernel_export, tmp_path):
    """ETDump names every edgekit kernel call, so the profiler's per-op table shows where a step goes."""
    import numpy as np

    from edgekit.targets.registry import get_target

    session = get_target("android").session(edgekit_kernel_export("llama"), profile_dir=tmp_path)
    session.forward(np.asarray([[1, 2, 3]]), np.arange(3))
    session.forward(np.asarray([[4]]), np.asarray([3]))
    rows = {r["name"]: r for r in session.op_profile()}
    for op in ("edgekit::qkv_rope_q4.out", "edgekit::fused_linear_q4.out", "edgekit::qkv_cache_attention.out"):
        assert op in rows and rows[op]["calls"] > 0 and rows[op]["total_ms"] > 0, sorted(rows)
    assert rows["edgekit::qkv_rope_q4.out"]["calls"] == 2 * 2   # 2 layers x 2 forwards
