"""quant 'source' on ExecuTorch: a GGUF's own 4-bit grids (codes, fp16 scales and minimums as stored) in edgekit's
int4 kernels with int8 activations per group, the Q8_0 / Q4_0 table as stored. The .pte runs in the ExecuTorch
runtime and matches the eager fp32 graph of the same file (KL) and the reference (same fp16 grid, same per-group
activation rounding) tightly; the .pte holds the file's packed codes and minimums byte for byte, and a tied Q8_0
table once (edgekit::embedding_q8 and edgekit::linear_q8 read one constant; their kernel against numpy)."""
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
from edgekit.kernels.q8 import pack_q8, reference_embedding_q8, reference_linear_q8, unpack_q8
from edgekit.targets.base import TargetSpec
from edgekit.targets.registry import get_target

pytest.importorskip("executorch")

SEQ = 40
MAX_SEQ_LEN = 48
# q|k|v and gate|up mix Q4_1 with Q4_0 parts (minimum -8 * scale); a Q8_0 table (tied: its head split in nibbles)
FUSED = {"attn_q.weight": Q.Q4_1, "attn_k.weight": Q.Q4_0, "attn_v.weight": Q.Q4_1, "attn_output.weight": Q.Q4_1,
         "ffn_gate.weight": Q.Q4_1, "ffn_up.weight": Q.Q4_0, "ffn_down.weight": Q.Q4_1, "token_embd.weight": Q.Q8_0,
         "output.weight": Q.Q4_1}
# a Q8_0 v: q|k|v cannot stack on one int4 grid, so the layers run as single Q4Linears and v in the int8 kernel on
# the file's codes; a Q5_0 down (Gemma 3's file is mostly Q5_0 / Q6_K) re-quantized to int8 groups of 32; a 4-bit
# table (Q4_0) and a Q4_1 head (untied: edgekit's fused output op)
SINGLE = {**FUSED, "attn_v.weight": Q.Q8_0, "ffn_down.weight": Q.Q5_0, "token_embd.weight": Q.Q4_0}
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
    # the tied Q8_0 table: one constant, read by the lookup and the head
    assert {"edgekit::embedding_q8.out", "edgekit::linear_q8.out"} <= ops, ops
    assert not any(o.startswith("quantized_decomposed::embedding") for o in ops), ops
    sq = model.source_quant
    parts = [sq[f"layers.0.attention.{n}.weight"] for n in ("wq", "wk", "wv")]
    mins = torch.cat([t.mins if t.mins is not None else -8 * t.scales for t in parts])   # Q4_0's k: -8 * d
    packed, scales, _, tiled_mins = q4.pack(torch.cat([t.codes for t in parts]), torch.cat([t.scales for t in parts]),
                                            32, mins=mins, scale_dtype=torch.float16)
    for t in (packed, scales.view(torch.int16), tiled_mins.view(torch.int16)):
        assert t.numpy().tobytes() in data                   # the file's codes, d and m, byte for byte
    table = sq["tok_embeddings.weight"]
    codes = (table.codes.to(torch.int16) - 128).to(torch.int8)
    packed, scales = pack_q8(codes, table.scales, table.group_size)
    assert data.count(packed.numpy().tobytes()) == 1             # the file's Q8_0 codes, stored once
    assert scales.view(torch.int16).numpy().tobytes() in data     # its d, as fp16
    assert codes.numpy().tobytes() not in data                   # no row-major int8 copy for another embedding op
    hi_lo = torch.cat([table.codes >> 4, table.codes & 15], 1)   # nor the head's old [hi | lo] nibble split
    assert q4.pack(hi_lo, torch.cat([16 * table.scales, table.scales], 1), 32,
                   mins=torch.cat([-128 * table.scales, 0 * table.scales], 1),
                   scale_dtype=torch.float16)[0].numpy().tobytes() not in data
    grids = art.metadata["source_grids"]
    assert grids["kept"] == ["gguf:Q4_0", "gguf:Q4_1", "gguf:Q8_0"] and grids["float"] == []
    assert grids["requantized"] == {} and grids["int8_kernel"] == ["output"]
    assert grids["shared_table"] == "tok_embeddings.weight"
    assert grids["scales_rounded_to_fp16"] == []
    assert art.metadata["delegation"].get("delegated_nodes", 0) == 0, art.metadata["delegation"]   # no XNNPACK


def test_layers_that_cannot_fuse_run_single_kernels(source_exports):
    _, art = source_exports["llama"]
    _, ops = _program(art)
    assert {"edgekit::linear_q4.out", "edgekit::fused_linear_q4.out", "edgekit::linear_q8.out"} <= ops, ops
    assert "edgekit::qkv_rope_q4.out" not in ops
    grids = art.metadata["source_grids"]
    assert grids["float"] == []                              # nothing quantized in the file goes back to float
    assert grids["int8_kernel"] == [f"layers.{i}.{n}" for i in range(2)
                                    for n in ("attention.wv", "feed_forward.w2")]
    assert "gguf:Q8_0" in grids["kept"]                      # v: the file's codes and d
    # the Q5_0 down only; the Q4_0 table and the Q4_1 head as stored
    assert grids["requantized"] == {f"layers.{i}.feed_forward.w2.weight":
                                    "gguf:Q5_0 groups of 32 -> int8 groups of 32 (fp16 scales)" for i in range(2)}


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

    from edgekit.bundling import Bundle

    model, _ = source_exports["qwen3"]
    b = edgekit.bundle(model, target="android", out=tmp_path, max_seq_len=MAX_SEQ_LEN, show_progress=False,
                       validate=False)
    opened = Bundle.open(b.path)
    lib = "kernels/libedgekit_kernels.so"
    assert opened.manifest["kernels"] == [lib] and lib in opened.manifest["files"]
    assert opened.manifest["quant"] == "source"   # the default for a quantized checkpoint
    logits = opened.session().forward(np.array([[1, 2, 3]], dtype=np.int64), np.arange(3, dtype=np.int64))
    assert np.isfinite(np.asarray(logits)).all()


def _q8_table(n: int, k: int, group: int, seed: int = 0):
    """Random Q8_0-like codes (the full int8 range, -128 included) and fp16-exact scales."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(-128, 128, (n, k), generator=g, dtype=torch.int8)
    scales = (torch.rand(n, k // group, generator=g) * 0.02 + 1e-4).half().float()
    return codes, scales


def _numpy_q8_linear(x: np.ndarray, codes: np.ndarray, scales: np.ndarray, group: int) -> np.ndarray:
    """llama.cpp's Q8_0 x Q8_0 in numpy: each group of x quantized with scale max|x| / 127 (round half to even),
    integer dots per group, times both scales."""
    m, k = x.shape
    xb = x.reshape(m, k // group, group).astype(np.float32)
    a = np.abs(xb).max(-1, keepdims=True) / np.float32(127)
    inv = np.where(a != 0, np.float32(1) / np.where(a != 0, a, 1), 0).astype(np.float32)
    q = np.clip(np.rint(xb * inv), -128, 127).astype(np.int64)
    w = codes.reshape(codes.shape[0], k // group, group).astype(np.int64)
    dots = np.einsum("mbg,nbg->mnb", q, w).astype(np.float64)
    return (dots * a[..., 0][:, None, :] * scales[None].astype(np.float64)).sum(-1)


def test_q8_layout_and_reference_match_numpy():
    codes, scales = _q8_table(40, 96, 32)
    packed, s16 = pack_q8(codes, scales, 32)
    assert packed.numel() == 48 * 96 and s16.dtype == torch.float16          # rows padded to tiles of 16
    w = unpack_q8(packed, s16, 32, 40, 96)
    assert torch.equal(w, codes.float() * scales.repeat_interleave(32, 1))  # exact: the file's dequantization
    idx = torch.tensor([[0, 39, 17, 17]])
    assert torch.equal(reference_embedding_q8(packed, s16, idx, 40, 96, 32), w[idx])
    x = torch.randn(5, 96, generator=torch.Generator().manual_seed(1)) * 3
    want = _numpy_q8_linear(x.numpy(), codes.numpy(), scales.numpy(), 32)
    got = reference_linear_q8(x, packed, s16, 32, 40).double().numpy()
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()           # float order only


@pytest.mark.parametrize("m,k,n,group", [(1, 576, 1000, 32), (3, 64, 40, 32), (9, 128, 33, 64), (17, 256, 24, 128)])
def test_q8_kernel_matches_the_reference(m, k, n, group):
    """The compiled head (SIMD path and its scalar loops) against the PyTorch reference, with and without the fused
    RMSNorm; prefill shapes cover the 4-token passes and a partial last tile."""
    from edgekit_executorch.kernels import load_kernel_library

    lib = load_kernel_library()
    codes, scales = _q8_table(n, k, group, seed=m)
    packed, s16 = pack_q8(codes, scales, group)
    g = torch.Generator().manual_seed(k)
    x, norm = torch.randn(m, k, generator=g) * 2, torch.rand(k, generator=g) + 0.5
    for norm_w in (None, norm):
        ref = reference_linear_q8(x, packed, s16, group, n, norm_w, 1e-5)
        for portable in (0, 1):
            y = torch.full((m, n), float("nan"))
            rc = lib.edgekit_linear_q8(x.data_ptr(), packed.data_ptr(), s16.data_ptr(),
                                       None if norm_w is None else norm_w.data_ptr(), 1e-5, y.data_ptr(), m, k, n,
                                       group, 1, portable)
            assert rc == 0
            # float order (int32 dots are exact); the norm's sum of squares runs in double in C++, float in torch,
            # which can move an activation across a rounding boundary: one int8 step of one group
            assert float((y - ref).abs().max()) <= 2e-5 * float(ref.abs().max()), (norm_w is not None, portable)


class _SharedTable(torch.nn.Module):
    def __init__(self, codes, scales, group, norm):
        super().__init__()
        from edgekit_executorch.kernels.linear_q8 import Q8Embedding, Q8Output, Q8Table

        table = Q8Table(codes, scales, group)
        self.embed, self.head = Q8Embedding(table), Q8Output(norm, table)

    def forward(self, tokens):
        e = self.embed(tokens)
        return e, self.head(e)


def test_a_shared_table_is_stored_once_and_runs_in_the_runtime(tmp_path):
    """Lookup and head over one Q8Table: the .pte holds its packed codes once, the runtime's lookup returns the
    table's rows exactly and its head matches the reference."""
    from edgekit_executorch.kernels import load_kernel_library
    from executorch.exir import to_edge
    from executorch.runtime import Runtime

    load_kernel_library()
    codes, scales = _q8_table(80, 64, 32, seed=3)
    norm = torch.nn.RMSNorm(64, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(64) + 0.5)
    module = _SharedTable(codes, scales, 32, norm).eval()
    tokens = torch.tensor([[5, 79, 0, 5]])
    with torch.no_grad():
        ep = torch.export.export(module, (tokens,), strict=False)
        prog = to_edge(ep).to_executorch()
    data = prog.buffer
    packed = module.embed.table.packed
    assert data.count(packed.numpy().tobytes()) == 1
    (tmp_path / "m.pte").write_bytes(data)
    emb, logits = Runtime.get().load_program(tmp_path / "m.pte").load_method("forward").execute([tokens])
    w = codes.float() * scales.repeat_interleave(32, 1)
    assert torch.equal(emb, w[tokens])                                     # exact rows of the file's table
    ref = reference_linear_q8(w[tokens], packed, module.embed.table.scales, 32, 80, norm.weight.detach(), 1e-5)
    assert float((logits - ref).abs().max()) <= 2e-5 * float(ref.abs().max())
