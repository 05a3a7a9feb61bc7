"""The ONNX target's int8 KV cache (edgekit_onnx/int8_kv.py: plain ONNX ops, see its docstring for why this route)
against the PyTorch reference (edgekit::update_int8_cache + edgekit::attention), and SmolLM2 end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
from e2e_text import MIN_AGREEMENT, N_TOKENS, smollm2_tokens, teacher_forced_top1

pytest.importorskip("onnxruntime")

MAX_SEQ_LEN = 64
LOGIT_ATOL = 1e-3      # vs the eager int8-cache reference: ~2e-7, or up to 3e-4 where one cache entry rounds
#                        the other way (FLIP_FRACTION below: ORT and torch sum the Hadamard rotation in other orders)
SCALE_RTOL = 1e-5      # cache scales vs the reference's (same fp32 ops: absmax / 127)
FLIP_FRACTION = 1e-3   # int8 cache entries allowed to differ by one step (x / scale within float noise of a .5)


@pytest.fixture(scope="module")
def int8_onnx(tiny_model, tmp_path_factory):
    import edgekit

    made = {}

    def get(case: str, quant: str = "fp32"):
        if (case, quant) not in made:
            out = tmp_path_factory.mktemp(f"onnx-int8-{case}-{quant}") / "artifact"
            made[case, quant] = edgekit.export(tiny_model(case), "iot", quant=quant, max_seq_len=MAX_SEQ_LEN,
                                               kv_cache="int8", out=out, show_progress=False)
        return made[case, quant]

    return get


def reference_session(model, spec_kv: str = "int8"):
    from edgekit_onnx import OnnxTarget

    from edgekit.runtime.session import EagerSession
    from edgekit.targets.base import TargetSpec

    spec = TargetSpec(quant="fp32", max_seq_len=MAX_SEQ_LEN, kv_cache=spec_kv)
    return EagerSession(OnnxTarget().reference(model, spec))


@pytest.mark.parametrize("case", ["llama", "qwen2", "qwen3"])
def test_int8_export_records_cache_and_validates(int8_onnx, case):
    art = int8_onnx(case)
    meta = json.loads((art.path / "artifact.json").read_text())["metadata"]
    assert meta["io"]["cache_dtype"] == "int8" and meta["io"]["scale_shape"][2] == MAX_SEQ_LEN
    assert meta["kv_cache"] == "int8" and meta["kv_cache_storage"]["dtype"] == "int8" and "genai_config.json" in meta["notes"]
    assert not (art.path / "genai_config.json").exists(), "genai_config.json cannot describe the scale tensors"
    assert meta["validation"]["max_abs_logit_diff"] <= LOGIT_ATOL


@pytest.mark.parametrize("case", ["llama", "qwen3"])
def test_int8_prefill_chunks_and_decode_match_reference(int8_onnx, tiny_model, case):
    """Chunked prefill (crossing chunk edges), then decode; logits and the stored cache against the reference."""
    model = tiny_model(case)
    from edgekit_onnx import OnnxTarget

    art = int8_onnx(case)
    got = OnnxTarget().session(art)
    ref = reference_session(model)
    rng = np.random.default_rng(5)
    tokens = rng.integers(0, model.config.vocab_size, MAX_SEQ_LEN - 1).astype(np.int64)
    got.reset(), ref.reset()
    for start, t in ((0, 9), (9, 16), (25, 1), (26, 1), (27, 5), *((p, 1) for p in range(32, 40))):
        ids, pos = tokens[None, start:start + t], np.arange(start, start + t)
        diff = np.abs(got.forward(ids, pos) - ref.forward(ids, pos)).max()
        assert diff <= LOGIT_ATOL, f"chunk at {start} (T={t}): max |Δlogit| {diff}"
    used = 40
    attend = ref.decoder.layers[0].attention.attend
    host = got._host   # layer 0: key, value, key_scale, value_scale ([1, Hkv, S, D] / [1, Hkv, S, 1])
    for cache, scale, want_q, want_s in ((host[0], host[2], attend.k_cache, attend.k_scale_cache),
                                         (host[1], host[3], attend.v_cache, attend.v_scale_cache)):
        want_q = want_q[0, :used].transpose(0, 1).numpy()
        want_s = want_s[0, :used].transpose(0, 1).numpy()
        np.testing.assert_allclose(scale[0, :, :used, 0], want_s, rtol=SCALE_RTOL)
        steps = np.abs(cache[0, :, :used].astype(np.int32) - want_q.astype(np.int32))
        assert steps.max() <= 1 and (steps > 0).mean() <= FLIP_FRACTION, (steps.max(), (steps > 0).mean())


def test_int8_cache_on_int4_weights_validates(int8_onnx):
    art = int8_onnx("qwen2", "int4")
    v = art.metadata["validation"]   # an int8 cache is checked against a noisy reference and the fp32 model too
    assert v["reference_noise_floor"] is not None and "top1_agreement_vs_fp32" in v
    assert art.metadata["io"]["cache_dtype"] == "int8"


def test_int8_cache_refuses_fp16_activations(tiny_model, tmp_path):
    import edgekit
    from edgekit.errors import UnsupportedOption

    with pytest.raises(UnsupportedOption, match="fp16"):
        edgekit.export(tiny_model("llama"), "iot", quant="fp16", max_seq_len=MAX_SEQ_LEN, kv_cache="int8",
                       out=tmp_path / "a", show_progress=False)


def test_int8_cache_is_a_quarter_of_the_fp32_bytes(int8_onnx, tiny_model):
    from edgekit_onnx import OnnxTarget

    sess = OnnxTarget().session(int8_onnx("llama"))
    cfg = tiny_model("llama").config
    fp32_bytes = 2 * cfg.num_layers * cfg.num_kv_heads * MAX_SEQ_LEN * cfg.head_dim * 4
    int8_bytes = sum(h.nbytes for h in sess._host)
    assert int8_bytes == fp32_bytes * (cfg.head_dim + 4) // (4 * cfg.head_dim)


@pytest.mark.slow   # 48 s: two fp32 SmolLM2 ONNX exports + 2 x 256 teacher-forced tokens
def test_smollm2_onnx_int8_cache_top1_agreement(smollm2, tmp_path_factory):
    """>= 99% top-1 agreement with the fp32-cache ONNX export over 256 teacher-forced tokens (128-token prefill,
    then 128 single-token decode steps); fp32 weights in both, so only the cache differs."""
    import edgekit
    from edgekit.targets.registry import get_target

    tokens = smollm2_tokens(smollm2)
    top1 = {}
    for kv in ("int8", "fp32"):
        out = tmp_path_factory.mktemp(f"onnx-smollm2-{kv}") / "artifact"
        art = edgekit.export(smollm2, "iot", quant="fp32", max_seq_len=N_TOKENS + 8, kv_cache=kv, out=out,
                             show_progress=False, validate=kv == "int8")
        session = get_target("iot").session(art)
        top1[kv] = teacher_forced_top1(session, tokens)
    agreement = float((top1["int8"] == top1["fp32"]).mean())
    print(f"ONNX SmolLM2 top-1 agreement int8 vs fp32 cache over {N_TOKENS} tokens: {agreement:.4f}")
    assert agreement >= MIN_AGREEMENT
