"""quant 'source' on ExecuTorch: a GGUF's own 4-bit grids (codes, fp16 scales and minimums as stored) in edgekit's
int4 kernels with int8 activations per group, the Q8_0 / Q4_0 table as stored. The .pte runs in the ExecuTorch
runtime and matches the eager fp32 graph of the same file (KL) and the reference (same fp16 grid, same per-group
activation rounding) tightly; the .pte holds the file's packed codes and minimums byte for byte."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from gguf_files import write_gguf

import edgekit
from edgekit.errors import UnsupportedOption
from edgekit.kernels import q4
from edgekit.targets.base import TargetSpec
from edgekit.targets.registry import get_target

pytest.importorskip("executorch")

SEQ = 40
MAX_SEQ_LEN = 48
# q|k|v and gate|up mix Q4_1 with Q4_0 parts (minimum -8 * scale); a Q8_0 table (tied: its head split in nibbles)
FUSED = {"attn_q.weight": Q.Q4_1, "attn_k.weight": Q.Q4_0, "attn_v.weight": Q.Q4_1, "attn_output.weight": Q.Q4_1,
         "ffn_gate.weight": Q.Q4_1, "ffn_up.weight": Q.Q4_0, "ffn_down.weight": Q.Q4_1, "token_embd.weight": Q.Q8_0,
         "output.weight": Q.Q4_1}
# a Q8_0 v: q|k|v cannot stack on one int4 grid, so the layers run as single Q4Linears and v stays float; a 4-bit
# table (Q4_0) and a Q4_1 head (untied: edgekit's fused output op)
SINGLE = {**FUSED, "attn_v.weight": Q.Q8_0, "token_embd.weight": Q.Q4_0}
CASES = {"qwen3": FUSED, "qwen2": FUSED, "llama": SINGLE}   # tied + q/k norms; qkv biases; untied + rope scaling


@pytest.fixture(scope="module")
def source_exports(checkpoint_dir, tmp_path_factory):
    """case -> (model, validated artifact), each exported once."""
    d = tmp_path_factory.mktemp("et-source")
    out = {}
    for case, types in CASES.items():
        model = edgekit.load(write_gguf(checkpoint_dir(case), d / f"{case}.gguf", types=types))
        art = edgekit.export(model, "android", quant="source", max_seq_len=MAX_SEQ_LEN, last_logits_only=False,
                             out=d / case, show_progress=False)
        out[case] = model, art
    return out


def _logits(source_exports, case):
    model, art = source_exports[case]
    ids = torch.randint(1, model.config.vocab_size, (1, SEQ), generator=torch.Generator().manual_seed(0))
    pos = torch.arange(SEQ)
    sess = get_target("executorch").session(art)
    got = torch.from_numpy(np.asarray(sess.forward(ids.numpy(), pos.numpy())))[0].double()
    spec = TargetSpec(quant="source", max_seq_len=MAX_SEQ_LEN, last_logits_only=False)
    with torch.no_grad():
        fp32 = model.decoder(MAX_SEQ_LEN, False, dtype=torch.float32)(ids, pos)[0].double()
        ref = get_target("executorch").reference(model, spec)(ids, pos)[0].double()
    return got, fp32, ref


@pytest.mark.parametrize("case", list(CASES))
def test_pte_matches_the_files_fp32_graph_and_the_reference(source_exports, case):
    got, fp32, ref = _logits(source_exports, case)
    p, q = fp32.log_softmax(-1), got.log_softmax(-1)
    kl = float((p.exp() * (p - q)).sum(-1).mean())
    assert kl <= 1e-3, kl                                    # the bound, vs the file's own float weights
    # the reference has the artifact's fp16 grid and per-group activation rounding: float order differs, and where
    # it moves an activation across a rounding boundary one int8 code flips (~1e-3 on a logit of these tiny models)
    per_token = (got - ref).abs().amax(-1)
    assert float(per_token.max()) <= 5e-3 and float(per_token.median()) <= 1e-5, per_token
    assert source_exports[case][1].metadata["validation"]["max_abs_logit_diff"] <= 5e-3


def _program(art):
    from executorch.exir._serialize._program import deserialize_pte_binary

    data = (art.path / "model.pte").read_bytes()
    plan = deserialize_pte_binary(data).program.execution_plan[0]
    return data, {op.name + "." + op.overload for op in plan.operators}


def test_pte_holds_the_files_codes_and_minimums(source_exports):
    model, art = source_exports["qwen3"]
    data, ops = _program(art)
    assert {"edgekit::qkv_rope_q4.out", "edgekit::fused_linear_q4.out"} <= ops, ops
    assert any(o.startswith("quantized_decomposed::embedding_byte") for o in ops), ops   # the Q8_0 table
    sq = model.source_quant
    parts = [sq[f"layers.0.attention.{n}.weight"] for n in ("wq", "wk", "wv")]
    mins = torch.cat([t.mins if t.mins is not None else -8 * t.scales for t in parts])   # Q4_0's k: -8 * d
    packed, scales, _, tiled_mins = q4.pack(torch.cat([t.codes for t in parts]), torch.cat([t.scales for t in parts]),
                                            32, mins=mins, scale_dtype=torch.float16)
    for t in (packed, scales.view(torch.int16), tiled_mins.view(torch.int16)):
        assert t.numpy().tobytes() in data                   # the file's codes, d and m, byte for byte
    table = sq["tok_embeddings.weight"]
    assert (table.codes.to(torch.int16) - 128).to(torch.int8).numpy().tobytes() in data   # Q8_0 codes as stored
    # the tied Q8_0 head: its codes' high and low nibbles as two 4-bit grids (16 d, min -128 d | d, min 0)
    hi_lo = torch.cat([table.codes >> 4, table.codes & 15], 1)
    s = table.scales
    head = q4.pack(hi_lo, torch.cat([16 * s, s], 1), 32, mins=torch.cat([-128 * s, 0 * s], 1),
                   scale_dtype=torch.float16)
    assert head[0].numpy().tobytes() in data and head[3].view(torch.int16).numpy().tobytes() in data
    grids = art.metadata["source_grids"]
    assert grids["kept"] == ["gguf:Q4_0", "gguf:Q4_1", "gguf:Q8_0"] and grids["float"] == []
    assert grids["requantized"] == {} and grids["split_8bit"] == ["output"]
    assert grids["scales_rounded_to_fp16"] == []
    assert art.metadata["delegation"].get("delegated_nodes", 0) == 0, art.metadata["delegation"]   # no XNNPACK


def test_layers_that_cannot_fuse_run_single_kernels(source_exports):
    _, art = source_exports["llama"]
    _, ops = _program(art)
    assert {"edgekit::linear_q4.out", "edgekit::fused_linear_q4.out"} <= ops, ops
    assert "edgekit::qkv_rope_q4.out" not in ops
    grids = art.metadata["source_grids"]
    assert grids["float"] == ["layers.0.attention.wv.weight", "layers.1.attention.wv.weight"]
    assert grids["requantized"] == {}                        # the Q4_0 table and the Q4_1 head as stored


@pytest.mark.parametrize("option", ["group_size", "embedding_bits", "output_bits"])
def test_source_refuses_what_the_file_fixes(source_exports, option, tmp_path):
    model, _ = source_exports["qwen3"]
    with pytest.raises(UnsupportedOption, match=f"{option} cannot be set with quant 'source'"):
        edgekit.export(model, "android", quant="source", max_seq_len=MAX_SEQ_LEN, out=tmp_path / "a",
                       show_progress=False, **{option: 32 if option == "group_size" else 8})
    with pytest.raises(UnsupportedOption, match="no per-group minimums"):
        edgekit.export(model, "android", quant="source", linear_kernel="xnnpack", max_seq_len=MAX_SEQ_LEN,
                       out=tmp_path / "b", show_progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_source_needs_a_quantized_checkpoint(tiny_model, tmp_path):
    with pytest.raises(UnsupportedOption, match="use quant '8da4w'"):
        edgekit.export(tiny_model("llama"), "android", quant="source", max_seq_len=MAX_SEQ_LEN, out=tmp_path / "a",
                       show_progress=False)
    assert not (tmp_path / "a").exists()


def test_a_bundle_made_straight_from_the_model_carries_its_kernel_library(source_exports, tmp_path):
    """Bundling from a model exports into the bundle's staging folder and moves the artifact's files in: the kernel
    library (one of them) must arrive once, named by the manifest, and the bundle verify and run."""
    import numpy as np

    from edgekit.bundle import Bundle

    model, _ = source_exports["qwen3"]
    b = edgekit.bundle(model, target="android", out=tmp_path, max_seq_len=MAX_SEQ_LEN, show_progress=False,
                       validate=False)
    opened = Bundle.open(b.path)
    lib = "kernels/libedgekit_kernels.so"
    assert opened.manifest["kernels"] == [lib] and lib in opened.manifest["files"]
    assert opened.manifest["quant"] == "source"   # the default for a quantized checkpoint
    logits = opened.session().forward(np.array([[1, 2, 3]], dtype=np.int64), np.arange(3, dtype=np.int64))
    assert np.isfinite(np.asarray(logits)).all()
