"""The compiled kernel (host ISA path, through its C entry point) against the PyTorch reference over a sweep.

Tiles are 4096 / D positions (64 for D=64, 32 for D=128): the contexts include tile edges +-1; T=128 chunks
start mid-tile and cross several tile edges; forced context splits exercise the flash-decoding merge."""
from __future__ import annotations

import pytest
import torch
from kernel_cases import ATOL, make_case

CONTEXTS = {64: [1, 2, 63, 64, 65, 129, 1000, 2047, 2049, 4096], 128: [1, 31, 32, 33, 65, 513, 4095]}
RATIOS = [(2, 2), (4, 2), (14, 2)]  # grouped-query ratios 1, 2, 7


def sweep():
    for d, contexts in CONTEXTS.items():
        for hq, hkv in RATIOS:
            for ctx in contexts:
                for t in (1, 128):
                    if t <= ctx:
                        yield d, hq, hkv, ctx, t


def _dequantized(cache: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (cache.float() * scale.unsqueeze(-1)).contiguous()


@pytest.mark.parametrize("cache", ["int8", "fp32"])
@pytest.mark.parametrize("d", [64, 128])
@pytest.mark.parametrize("hq,hkv", RATIOS)
def test_kernel_matches_reference_sweep(kernel_lib, d, hq, hkv, cache):
    """int8 caches with their scales, and the fp32-cache path (scales None) on the same caches dequantized: the
    reference output is the same for both, and so is the tolerance."""
    from edgekit_executorch.kernels import direct

    checked = 0
    for ctx in CONTEXTS[d]:
        for t in (1, 128):
            if t > ctx:
                continue
            c = make_case(hq, hkv, d, ctx, t, seed=ctx * 7 + t)
            if cache == "int8":
                kv = (c["k"], c["v"], c["ks"], c["vs"])
            else:
                kv = (_dequantized(c["k"], c["ks"]), _dequantized(c["v"], c["vs"]), None, None)
            for splits in (0, 3):  # auto (thread count) and a forced 3-way context split
                got = direct.attention(c["q"], *kv, c["pos"], splits=splits)
                err = (got - c["ref"]).abs().max().item()
                assert err <= ATOL, (f"{cache} D={d} Hq={hq} Hkv={hkv} ctx={ctx} T={t} splits={splits}: "
                                     f"max abs err {err}")
                checked += 1
    assert checked >= 2 * len(CONTEXTS[d])


def test_kernel_fp32_cache_of_unquantized_values(kernel_lib):
    """fp32 caches holding values no int8 grid contains (large and tiny magnitudes mixed), positions out of order."""
    from edgekit_executorch.kernels import direct

    from edgekit.kernels import reference_attention

    g = torch.Generator().manual_seed(11)
    q = torch.randn(1, 4, 14, 64, generator=g)
    k = torch.randn(1, 300, 2, 64, generator=g) * torch.logspace(-3, 1, 64)
    v = torch.randn(1, 300, 2, 64, generator=g) * 3.0
    pos = torch.tensor([5, 299, 64, 63])
    ref = reference_attention(q, k, v, None, None, pos)
    for use_pool in (True, False):
        got = direct.attention(q, k, v, None, None, pos, use_pool=use_pool)
        assert (got - ref).abs().max() <= ATOL


def test_kernel_rejects_mixed_cache_kinds(kernel_lib):
    from edgekit_executorch.kernels import direct

    c = make_case(2, 2, 64, 8, 1, seed=1)
    with pytest.raises(ValueError, match="int8 caches with both scales, or fp32 caches with neither"):
        direct.attention(c["q"], _dequantized(c["k"], c["ks"]), _dequantized(c["v"], c["vs"]), c["ks"], c["vs"],
                         c["pos"])
    with pytest.raises(ValueError, match="int8 caches with both scales"):
        direct.attention(c["q"], c["k"], c["v"], None, None, c["pos"])


def test_kernel_positions_not_contiguous_and_serial_path(kernel_lib):
    """input_pos need not be a contiguous range: each query row sees exactly j <= input_pos[t]."""
    from edgekit_executorch.kernels import direct

    from edgekit.kernels import reference_attention

    c = make_case(14, 2, 64, 300, 4, seed=5)
    pos = torch.tensor([5, 299, 64, 63])
    ref = reference_attention(c["q"], c["k"], c["v"], c["ks"], c["vs"], pos)
    for use_pool in (True, False):
        got = direct.attention(c["q"], c["k"], c["v"], c["ks"], c["vs"], pos, use_pool=use_pool)
        assert (got - ref).abs().max() <= ATOL


def test_kernel_update_matches_reference_quantization(kernel_lib):
    from edgekit_executorch.kernels import direct

    from edgekit.kernels import reference_update_int8_cache

    value = torch.randn(1, 9, 2, 64) * torch.logspace(-4, 3, 9)[None, :, None, None]
    value[0, 3, 1] = 0.0
    pos = torch.tensor([0, 5, 2, 7, 8, 9, 10, 11, 1])
    want_c, want_s = torch.zeros(1, 12, 2, 64, dtype=torch.int8), torch.zeros(1, 12, 2)
    got_c, got_s = want_c.clone(), want_s.clone()
    reference_update_int8_cache(value, want_c, want_s, pos)
    direct.update_int8_cache(value, got_c, got_s, pos)
    assert torch.equal(got_s, want_s)
    assert (got_c.int() - want_c.int()).abs().max() <= 1 and (got_c != want_c).float().mean() < 1e-3


def test_kernel_rejects_positions_outside_cache(kernel_lib):
    from edgekit_executorch.kernels import direct

    c = make_case(4, 2, 64, 10, 1)
    with pytest.raises(ValueError, match="input_pos"):
        direct.attention(c["q"], c["k"], c["v"], c["ks"], c["vs"], torch.tensor([c["k"].shape[1]]))


@pytest.mark.parametrize("d,hq,hkv", [(64, 14, 2), (64, 2, 2), (128, 4, 2)])
@pytest.mark.parametrize("t,start", [(1, 0), (1, 64), (1, 200), (37, 0), (16, 100)])
def test_qkv_cache_attention_matches_reference(kernel_lib, d, hq, hkv, t, start):
    """edgekit::qkv_cache_attention: the k / v heads of a fused projection row written into fp32 caches at input_pos,
    then q attended over them; caches and output against the PyTorch definition (cache_attention.py), ATOL."""
    from edgekit_executorch.kernels import direct
    from edgekit_executorch.kernels.cache_attention import reference_qkv_cache_attention

    g = torch.Generator().manual_seed(d + hq + t + start)
    s = start + t + 5
    k_cache = torch.randn(1, s, hkv, d, generator=g)   # positions < start: an earlier context; > pos: never read
    v_cache = torch.randn(1, s, hkv, d, generator=g)
    qkv = torch.randn(1, t, (hq + 2 * hkv) * d, generator=g) * 2
    pos = torch.arange(start, start + t)
    k_ref, v_ref = k_cache.clone(), v_cache.clone()
    ref = reference_qkv_cache_attention(qkv, k_ref, v_ref, pos, hq, hkv)
    got = direct.qkv_cache_attention(qkv, k_cache, v_cache, pos, hq, hkv)
    assert torch.equal(k_cache, k_ref) and torch.equal(v_cache, v_ref), "cache rows differ from the reference write"
    assert got.shape == (1, t, hq * d)
    err = (got - ref).abs().max().item()
    assert err <= ATOL, f"D={d} Hq={hq} Hkv={hkv} T={t} start={start}: max abs err {err}"


def test_qkv_cache_attention_rejects_bad_positions(kernel_lib):
    from edgekit_executorch.kernels import direct

    k, v = torch.zeros(1, 8, 2, 64), torch.zeros(1, 8, 2, 64)
    with pytest.raises(ValueError, match=r"input_pos outside \[0, 8\)"):
        direct.qkv_cache_attention(torch.zeros(1, 1, 6 * 64), k, v, torch.tensor([8]), 2, 2)
    assert not k.any() and not v.any(), "a rejected call must not write the caches"
