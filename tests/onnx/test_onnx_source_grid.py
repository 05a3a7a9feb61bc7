"""quant 'source': a GGUF's own quantized grids carried into ONNX Runtime's stock ops (MatMulNBits with the file's
codes and scales; a per-group correction for asymmetric grids; widened codes with uint8 zero points), so the artifact
computes the file's own weights. Mixed block types per fused linear (q Q4_1 | k Q4_0 | v Q8_0) and a widened Q5_0 are
covered; with float activations the export matches the eager fp32 graph of the same file to float32 rounding."""
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
from edgekit.targets.registry import get_target

SEQ = 48
TYPES = {"attn_q.weight": Q.Q4_1, "attn_k.weight": Q.Q4_0, "attn_v.weight": Q.Q8_0, "attn_output.weight": Q.Q4_1,
         "ffn_gate.weight": Q.Q4_1, "ffn_up.weight": Q.Q4_1, "ffn_down.weight": Q.Q5_0, "token_embd.weight": Q.Q8_0,
         "output.weight": Q.Q4_1}
# every grid 4-bit: no node rounds activations at accuracy_level 0 (8-bit grids always do: ORT's 8-bit CPU kernel
# with float activations is ~60x slower)
FOUR_BIT = {**TYPES, "attn_v.weight": Q.Q4_0, "ffn_down.weight": Q.Q4_1, "token_embd.weight": Q.Q4_0}


@pytest.fixture(scope="module")
def gguf_models(checkpoint_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("source-gguf")
    out = {case: edgekit.load(write_gguf(checkpoint_dir(case), d / f"{case}.gguf", types=TYPES))
           for case in ("llama", "qwen2")}
    out["llama-4bit"] = edgekit.load(write_gguf(checkpoint_dir("llama"), d / "llama4.gguf", types=FOUR_BIT))
    return out


def _kl_and_diff(model, artifact) -> tuple[float, float]:
    ids = torch.randint(1, model.config.vocab_size, (1, SEQ), generator=torch.Generator().manual_seed(0))
    sess = get_target("onnx").session(artifact)
    got = torch.from_numpy(np.asarray(sess.forward(ids.numpy(), np.arange(SEQ, dtype=np.int64))))[0].double()
    with torch.no_grad():
        ref = model.decoder(SEQ, False, dtype=torch.float32)(ids, torch.arange(SEQ))[0].double()
    p, q = ref.log_softmax(-1), got.log_softmax(-1)
    return float((p.exp() * (p - q)).sum(-1).mean()), float((got - ref).abs().max())


@pytest.mark.parametrize("case", ["llama", "qwen2", "llama-4bit"])
def test_the_files_own_weights_with_float_activations(gguf_models, case, tmp_path):
    model = gguf_models[case]
    kinds = {t.source for t in model.source_quant.values()}
    assert {"gguf:Q4_1", "gguf:Q4_0"} | (set() if case.endswith("4bit") else {"gguf:Q8_0", "gguf:Q5_0"}) == kinds
    art = edgekit.export(model, "iot", quant="source", accuracy_level=0, max_seq_len=SEQ, last_logits_only=False,
                         out=tmp_path / "a", show_progress=False)   # validated at the fp32-activation tolerance 1e-3
    assert set(art.metadata["source_grids"]["kept"]) == kinds and art.metadata["source_grids"]["float"] == []
    kl, diff = _kl_and_diff(model, art)
    # the bound is KL 0.001. All 4-bit: float32 rounding only; with 8-bit grids, their int8 activations
    assert kl <= 1e-5 and diff <= (1e-3 if case.endswith("4bit") else 2e-2), (kl, diff)


def test_int8_activations_stay_close(gguf_models, tmp_path):
    model = gguf_models["llama"]
    art = edgekit.export(model, "iot", quant="source", max_seq_len=SEQ, last_logits_only=False, out=tmp_path / "a",
                         show_progress=False)   # accuracy_level 4: MatMulNBits rounds activations per block
    kl, _ = _kl_and_diff(model, art)
    assert kl <= 1e-3, kl


def test_the_graph_uses_the_stock_ops_on_the_files_grids(gguf_models, tmp_path):
    import onnx

    art = edgekit.export(gguf_models["llama"], "iot", quant="source", max_seq_len=SEQ, out=tmp_path / "a",
                         show_progress=False, validate=False)
    g = onnx.load(str(art.path / "model.onnx"), load_external_data=False).graph
    nbits = [n for n in g.node if n.op_type == "MatMulNBits"]
    assert len(nbits) == 2 * 4 + 1                   # qkv, o, gate_up, down per layer + lm_head
    attrs = {n.name: {a.name: a.i for a in n.attribute} for n in nbits}
    assert attrs["/model/layers.0/attn/qkv_proj/MatMulNBits"]["bits"] == 8       # widened for v's Q8_0
    assert attrs["/model/layers.0/attn/o_proj/MatMulNBits"]["bits"] == 4
    assert attrs["/model/layers.0/mlp/down_proj/MatMulNBits"]["bits"] == 8       # Q5_0 widened, zero point 16
    assert len(nbits[0].input) == 3 or nbits[0].input[3]
    assert any(n.name == "/model/layers.0/mlp/down_proj/MatMulNBits" and len(n.input) == 4 for n in nbits)
    assert any(n.name == "/model/layers.0/attn/qkv_proj/correction" for n in g.node)   # q's Q4_1 minimum
    assert not any(n.name == "/model/layers.0/mlp/down_proj/correction" for n in g.node)   # Q5_0 is symmetric
    assert any(n.op_type == "GatherBlockQuantized" for n in g.node)                   # the Q8_0 table as stored


def test_edgekit_kernel_runs_the_files_minimums(gguf_models, tmp_path):
    import onnx

    model = gguf_models["llama-4bit"]
    art = edgekit.export(model, "iot", quant="source", linear_kernel="edgekit", max_seq_len=SEQ,
                         last_logits_only=False, out=tmp_path / "a", show_progress=False)
    # the reference: the same fp16 grid and int8 activations per group (emulated exactly on the tiny models)
    assert art.metadata["validation"]["max_abs_logit_diff"] <= 1e-3
    assert art.metadata["source_grids"]["scales_rounded_to_fp16"] == []     # Q4_0 / Q4_1: d and m are fp16
    g = onnx.load(str(art.path / "model.onnx"), load_external_data=False).graph
    lq = {n.name: list(n.input) for n in g.node if n.op_type == "LinearQ4"}
    assert len(lq) == 2 * 4 + 1 and not any(n.op_type == "MatMulNBits" for n in g.node)
    assert lq["/model/layers.0/attn/qkv_proj/LinearQ4"][-1].endswith("_mins")   # q's Q4_1 with k, v's Q4_0
    assert lq["/model/layers.0/mlp/down_proj/LinearQ4"][-1].endswith("_mins")   # SwiGLU fused into it
    kl, _ = _kl_and_diff(model, art)
    assert kl <= 1e-3, kl


def test_source_needs_a_quantized_checkpoint(tiny_model, tmp_path):
    with pytest.raises(UnsupportedOption, match="quant 'source' keeps a quantized checkpoint's own grids"):
        edgekit.export(tiny_model("llama"), "iot", quant="source", max_seq_len=SEQ, out=tmp_path / "a",
                       show_progress=False)
    assert not (tmp_path / "a").exists()


def test_source_fixes_groups_and_bits(gguf_models, tmp_path):
    with pytest.raises(UnsupportedOption, match="block_size cannot be set with quant 'source'"):
        edgekit.export(gguf_models["llama"], "iot", quant="source", block_size=32, max_seq_len=SEQ,
                       out=tmp_path / "a", show_progress=False)


def test_a_quantized_checkpoint_keeps_its_grids_by_default(gguf_models, tiny_model, tmp_path):
    art = edgekit.export(gguf_models["llama"], "iot", max_seq_len=SEQ, out=tmp_path / "g", show_progress=False,
                         validate=False)
    assert art.metadata["quantization"]["scheme"] == "source"
    art = edgekit.export(tiny_model("llama"), "iot", max_seq_len=SEQ, out=tmp_path / "f", show_progress=False,
                         validate=False)
    assert art.metadata["quantization"]["scheme"] == "int4"   # a float checkpoint: the target's default


# SmolLM2's layout: Q4_1 linears, a Q8_0 token embedding that is also the output layer (qwen3's tiny case is tied)
TIED = {**{k: Q.Q4_1 for k in TYPES}, "token_embd.weight": Q.Q8_0}


@pytest.fixture(scope="module")
def tied_model(checkpoint_dir, tmp_path_factory):
    path = write_gguf(checkpoint_dir("qwen3"), tmp_path_factory.mktemp("tied") / "tied.gguf", types=TIED)
    model = edgekit.load(path)
    assert model.config.tie_word_embeddings and model.source_quant["tok_embeddings.weight"].source == "gguf:Q8_0"
    return model


def _tensors(art):
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(art.path / "model.onnx"))
    return m, {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}


def _embedding_rows(art, model, ids):
    """The embedding op's own output in the artifact's runtime (its node's output made a graph output)."""
    import onnx
    import onnxruntime as ort

    m, _ = _tensors(art)
    node = next(n for n in m.graph.node if n.name.startswith("/model/embed_tokens/G"))
    m.graph.output.append(onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    for lib in art.metadata["custom_op_libraries"]:
        opts.register_custom_ops_library(str(art.path / lib))
    sess = ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    seq, cache = ids.shape[1], art.metadata["io"]["cache_shape"]   # empty caches of the static shape: a prefill
    feeds = {i.name: np.zeros(cache, np.float32) for i in sess.get_inputs() if i.name.startswith("past_key_values")}
    feeds.update(input_ids=ids, attention_mask=np.ones((1, seq), np.int64))
    rows = sess.run([node.output[0]], feeds)[0]
    return rows.reshape(1, seq, -1)[..., :model.config.hidden_size]


@pytest.mark.parametrize("kernel", ["edgekit", "mlas"])
def test_a_tied_q8_0_table_is_stored_once(tied_model, kernel, tmp_path):
    """One copy of the table's codes and of its scales, read by the embedding and the output layer alike
    (edgekit: GatherQ8 + LinearQ8 on fp16 scales; stock: GatherBlockQuantized + MatMulNBits, whose [V, H/32] scales
    are a Reshape of the gather's [V, H/32, 1]); the table dequantizes to the file's weights exactly, and so do the
    embedding rows the runtime gathers."""
    model = tied_model
    art = edgekit.export(model, "iot", quant="source", linear_kernel=kernel, max_seq_len=SEQ, last_logits_only=False,
                         out=tmp_path / "a", show_progress=False)   # validated against the file's own weights
    m, inits = _tensors(art)
    vocab, hidden = model.config.vocab_size, model.config.hidden_size
    tables = [n for n, a in inits.items() if a.dtype == np.uint8 and a.size == vocab * hidden]
    assert len(tables) == 1, tables
    by_name = {n.name: n for n in m.graph.node}
    if kernel == "edgekit":
        gather, head = by_name["/model/embed_tokens/GatherQ8"], by_name["/lm_head/LinearQ8"]
        assert list(gather.input[:2]) == list(head.input[1:3]) and gather.input[0] == tables[0]
        scales = inits[head.input[2]]
        assert scales.dtype == np.float16 and scales.shape == (vocab, hidden // 32)
    else:
        gather, head = by_name["/model/embed_tokens/GatherBlockQuantized"], by_name["/lm_head/MatMulNBits"]
        assert gather.input[0] == head.input[1] == tables[0]
        assert by_name["/lm_head/scales_2d"].input[0] == gather.input[2] and head.input[2].startswith("/lm_head/")
        scales = inits[gather.input[2]]
        assert scales.dtype == np.float32 and scales.shape == (vocab, hidden // 32, 1)
    n_scales = [n for n, a in inits.items() if a.size == vocab * hidden // 32]
    assert n_scales == [head.input[2] if kernel == "edgekit" else gather.input[2]]   # no second copy of the scales
    codes = inits[tables[0]].reshape(vocab, hidden // 32, 32).astype(np.float32) - 128
    table = (codes * scales.astype(np.float32).reshape(vocab, -1, 1)).reshape(vocab, hidden)
    want = model.weights["tok_embeddings.weight"].float().numpy()
    assert np.array_equal(table, want)   # exact: an int8 code times the file's fp16 d
    ids = np.array([[0, 5, vocab - 1, 5, 17]], dtype=np.int64)
    assert np.array_equal(_embedding_rows(art, model, ids)[0], want[ids[0]])   # the rows as gathered, exact too
    assert "/lm_head" not in art.metadata["source_grids"]["scales_rounded_to_fp16"]


def test_the_edgekit_layout_holds_the_files_q4_1_weights(tied_model, tmp_path):
    """LinearQ4's tiled codes, fp16 scales and minimums are the file's Q4_1 blocks: they dequantize to its weights
    to float32 rounding (a relative 2^-23 per element), with no row sums stored."""
    from edgekit.kernels import q4

    model = tied_model
    art = edgekit.export(model, "iot", quant="source", linear_kernel="edgekit", max_seq_len=SEQ, out=tmp_path / "a",
                         show_progress=False, validate=False)
    _, inits = _tensors(art)
    assert not any(n.endswith("_rowsum") for n in inits)
    name, a = "/model/layers.0/mlp/gate_up_proj", "layers.0.feed_forward."
    want = torch.cat([model.weights[a + "w1.weight"], model.weights[a + "w3.weight"]]).float()
    n, k = want.shape
    t = {s: torch.from_numpy(inits[f"{name}.weight_T4{s}"].copy()) for s in ("", "_scales", "_mins")}
    got = q4.unpack(t[""], t["_scales"], 32, n, k, mins=t["_mins"])
    assert float((got - want).abs().max()) <= 2.0 ** -23 * float(want.abs().max())
