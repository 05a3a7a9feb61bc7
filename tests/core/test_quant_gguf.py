"""Every GGUF block type decodes to the file's codes/scales/mins, and their dequantization is gguf.quants' own,
bit for bit (tolerance 0: the same float32 products in the same order). Legacy types are written by gguf.quants'
quantizer; K-quants (which it cannot write) are random valid blocks, so every bit pattern is exercised."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize, quantize
from gguf_files import write_gguf
from quant_blocks import K_QUANTS, random_blocks

import edgekit
from edgekit.model.gguf_blocks import BLOCK_TYPES, decode_gguf_blocks
from edgekit.model.gguf_reader import SUPPORTED_TYPES, unpermute_qk

LEGACY = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")
SYMMETRIC = {"Q4_0", "Q5_0", "Q8_0", "Q3_K", "Q6_K"}


def test_every_block_type_llama_cpp_writes_is_supported():
    assert set(BLOCK_TYPES) == set(LEGACY) | set(K_QUANTS)
    assert set(SUPPORTED_TYPES) == set(BLOCK_TYPES) | {"F32", "F16", "BF16"}
    for name, bt in BLOCK_TYPES.items():
        assert GGML_QUANT_SIZES[GGMLQuantizationType[name]] == (bt.block_size, bt.type_size), name


def _check(raw: np.ndarray, name: str, n_cols: int):
    qt = decode_gguf_blocks(raw, name, n_cols)
    ref = torch.from_numpy(dequantize(raw, GGMLQuantizationType[name]))
    assert torch.equal(qt.dequantize(), ref), f"{name}: max |diff| {(qt.dequantize() - ref).abs().max()}"
    bt = BLOCK_TYPES[name]
    assert qt.codes.dtype == torch.uint8 and int(qt.codes.max()) < 2 ** bt.bits
    assert (qt.bits, qt.group_size, qt.source) == (bt.bits, bt.group_size, f"gguf:{name}")
    assert qt.scales.shape == (raw.shape[0], n_cols // bt.group_size)
    assert (qt.mins is None) == (name in SYMMETRIC)
    return qt


@pytest.mark.parametrize("name", LEGACY)
def test_legacy_types_quantized_by_gguf_decode_exactly(name):
    rng = np.random.default_rng(1)
    w = (rng.standard_normal((16, 256)) * 0.05).astype(np.float32)
    w[3] = 0.0  # an all-zero block: d = 0
    w[5, :32] = 0.7  # a constant block
    raw = quantize(w, GGMLQuantizationType[name])
    qt = _check(raw, name, 256)
    d = raw.reshape(-1, BLOCK_TYPES[name].type_size)[:, :2].copy().view(np.float16).astype(np.float32)
    assert torch.equal(qt.scales.reshape(-1), torch.from_numpy(d.reshape(-1)))  # the file's fp16 d, as is
    if qt.mins is not None:
        m = raw.reshape(-1, BLOCK_TYPES[name].type_size)[:, 2:4].copy().view(np.float16).astype(np.float32)
        assert torch.equal(qt.mins.reshape(-1), torch.from_numpy(m.reshape(-1)))
    if name == "Q8_0":  # codes are the int8 values + 128
        q = raw.reshape(-1, 34)[:, 2:].view(np.int8).astype(np.int16) + 128
        assert torch.equal(qt.codes.reshape(-1).to(torch.int16), torch.from_numpy(q.reshape(-1)))


@pytest.mark.parametrize("name", sorted(BLOCK_TYPES))
def test_random_valid_blocks_decode_exactly(name):
    rng = np.random.default_rng(2)
    raw = random_blocks(name, 12, 768, rng)
    qt = _check(raw, name, 768)
    assert int(qt.codes.max()) == 2 ** BLOCK_TYPES[name].bits - 1 and int(qt.codes.min()) == 0  # every bit reached


def test_a_row_that_is_not_whole_blocks_is_refused():
    with pytest.raises(ValueError, match="not a whole number of 256-blocks"):
        decode_gguf_blocks(np.zeros((2, 144), np.uint8), "Q4_K", 128)


KMIX = {"attn_q.weight": "Q2_K", "attn_k.weight": "Q3_K", "attn_v.weight": "Q4_K", "attn_output.weight": "Q5_K",
        "ffn_gate.weight": "Q4_K", "ffn_up.weight": "Q5_K", "ffn_down.weight": "Q6_K", "token_embd.weight": "Q6_K",
        "output.weight": "Q8_0"}


@pytest.fixture(scope="module")
def kmix_gguf(tmp_path_factory):
    """A tiny Llama (rows of 256/512) written with a Q4_K_M-like mix of every K-quant; the blocks are random."""
    from checkpoints import make_checkpoint

    root = tmp_path_factory.mktemp("kmix")
    folder = make_checkpoint(root / "ckpt", "llama", hidden=256, intermediate=512, heads=4, kv_heads=2, layers=1)
    rng = np.random.default_rng(3)

    def encode(x: np.ndarray, qtype: GGMLQuantizationType) -> np.ndarray:
        if qtype.name in BLOCK_TYPES:
            return random_blocks(qtype.name, x.shape[0], x.shape[1], rng, scale=2e-3)
        return x

    types = {suffix: GGMLQuantizationType[t] for suffix, t in KMIX.items()}
    return write_gguf(folder, root / "kmix.gguf", types=types, encode=encode)


def test_k_quant_model_loads_with_the_files_tensors(kmix_gguf):
    from edgekit.model.gguf_reader import open_gguf

    model = edgekit.load(kmix_gguf)
    by_canon = {"layers.0.attention.wq.weight": "blk.0.attn_q.weight", "layers.0.attention.wk.weight":
                "blk.0.attn_k.weight", "layers.0.feed_forward.w2.weight": "blk.0.ffn_down.weight",
                "tok_embeddings.weight": "token_embd.weight", "output.weight": "output.weight"}
    raw = {t.name: t for t in open_gguf(kmix_gguf).tensors}
    assert len(model.source_quant) == 9  # seven linears, the embedding, the output layer
    for canon, gguf_name in by_canon.items():
        t = raw[gguf_name]
        ref = dequantize(t.data, t.tensor_type)
        if canon.endswith("wq.weight"):
            ref = unpermute_qk(ref, model.config.num_heads)
        elif canon.endswith("wk.weight"):
            ref = unpermute_qk(ref, model.config.num_kv_heads)
        qt = model.source_quant[canon]
        assert qt.source == f"gguf:{t.tensor_type.name}"
        assert torch.equal(qt.dequantize(), torch.from_numpy(np.ascontiguousarray(ref))), canon
        assert torch.equal(model.weights[canon], qt.dequantize()), canon
    logits = model.decoder(16)(torch.tensor([[1, 2, 3]]), torch.arange(3))
    assert torch.isfinite(logits).all()
    assert model.source_quant_type in {"Q4_K", "Q5_K", "Q6_K"}
