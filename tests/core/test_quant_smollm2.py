"""The real SmolLM2-135M Q4_1 GGUF: EdgeModel.source_quant holds every linear as the file's Q4_1 tensor (and the
tied embedding as Q8_0), in the weights' row order, and dequantizes exactly to the model's float weights."""
from __future__ import annotations

import numpy as np
import torch
from gguf.quants import dequantize

from edgekit.model.checkpoint import expected_shapes
from edgekit.model.gguf_reader import open_gguf, unpermute_qk


def test_every_linear_is_kept_as_the_files_q4_1(smollm2):
    shapes = expected_shapes(smollm2.config)
    linears = [n for n, s in shapes.items() if len(s) == 2 and n != "tok_embeddings.weight"]
    assert len(linears) == 7 * smollm2.config.num_layers
    assert set(smollm2.source_quant) == set(linears) | {"tok_embeddings.weight"}
    for name in linears:
        qt = smollm2.source_quant[name]
        assert (qt.source, qt.bits, qt.group_size, qt.shape) == ("gguf:Q4_1", 4, 32, shapes[name]), name
        assert qt.mins is not None
        assert torch.equal(qt.scales, qt.scales.half().float()) and torch.equal(qt.mins, qt.mins.half().float())
        assert torch.equal(qt.dequantize(), smollm2.weights[name]), name
    emb = smollm2.source_quant["tok_embeddings.weight"]
    assert (emb.source, emb.bits, emb.mins) == ("gguf:Q8_0", 8, None)
    assert torch.equal(emb.dequantize(), smollm2.weights["tok_embeddings.weight"])


def test_q_and_k_rows_are_unpermuted_like_the_float_weights(smollm2, smollm2_path):
    """The codes/scales/mins rows move with llama.cpp's q/k permute undone (checked against gguf's own dequant)."""
    raw = {t.name: t for t in open_gguf(smollm2_path).tensors}
    cfg = smollm2.config
    for layer in (0, cfg.num_layers - 1):
        for proj, heads in (("q", cfg.num_heads), ("k", cfg.num_kv_heads)):
            t = raw[f"blk.{layer}.attn_{proj}.weight"]
            ref = np.ascontiguousarray(unpermute_qk(dequantize(t.data, t.tensor_type), heads))
            qt = smollm2.source_quant[f"layers.{layer}.attention.w{proj}.weight"]
            assert torch.equal(qt.dequantize(), torch.from_numpy(ref))


def test_a_hugging_face_folder_has_no_source_quant(tiny_model):
    model = tiny_model("llama")
    assert model.source_quant == {} and model.source_quant_type is None
