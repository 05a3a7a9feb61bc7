"""edgekit's int4 linear (linear_kernel 'edgekit'): the packed layout, the PyTorch references against torchao's 8da4w
linear, the compiled kernel (SIMD and scalar tiles, fused prologues and epilogues) against the references, and the
same kernel core built for every ISA (AVX-512 VNNI, AVX2, portable; NEON dot products under qemu) against its scalar
definition; every weight form: symmetric or with per-group minimums (GGUF Q4_1), bf16 or fp16 scales, with per-token
and per-group activations."""
from __future__ import annotations

import hashlib
import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

pytest.importorskip("torchao")
from edgekit_executorch.kernels import linear_q4 as L
from edgekit_executorch.quantize import quantized_weight

from edgekit.kernels import q4

CSRC = Path(__file__).resolve().parents[2] / "targets" / "executorch" / "edgekit_executorch" / "kernels" / "csrc"
CORE_CSRC = Path(__file__).resolve().parents[2] / "edgekit" / "kernels" / "csrc"  # linear_q4.h
REL_TOL = 1e-5  # |kernel - reference| <= REL_TOL * max(1, max|reference|): same integer dots, fp32 sums reordered
DTYPES = (torch.bfloat16, torch.float16)


def _weight(n: int, k: int, group: int, seed: int = 0):
    torch.manual_seed(seed)
    return quantized_weight(torch.randn(n, k), 4, group, dynamic_activations=True)


def _q4(n: int, k: int, group: int, bias: bool = True, seed: int = 0) -> L.Q4Linear:
    w = _weight(n, k, group, seed)
    return L.Q4Linear(w.qdata, w.scale.float().reshape(n, -1), group, torch.randn(n) if bias else None)


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    err = float((got - want).abs().max())
    tol = REL_TOL * max(1.0, float(want.abs().max()))
    assert err <= tol, f"max |Δ| {err:.3g} > {tol:.3g}"


@pytest.mark.parametrize("n,k,group,chunk", [(16, 64, 32, 4096), (40, 256, 64, 4096), (33, 384, 128, 4096),
                                             (70, 128, 32, 16)])   # chunk 16: pack() in several row chunks
def test_pack_unpack_round_trip(n, k, group, chunk, monkeypatch):
    monkeypatch.setattr(q4, "PACK_ROWS", chunk)   # pack() lives in the core (edgekit/kernels/q4.py)
    w = _weight(n, k, group)
    packed, scales, rowsum = L.pack(w.qdata, w.scale.float().reshape(n, -1), group)
    npad = L.padded_rows(n)
    assert packed.dtype == torch.uint8 and packed.numel() == npad * k // 2
    assert scales.dtype == torch.bfloat16 and scales.numel() == npad * k // group
    dense = L.unpack(packed, scales, group, n, k)
    assert torch.equal(dense, w.dequantize())                    # codes and (bf16-exact) scales survive
    assert torch.allclose(rowsum[:n], dense.sum(dim=1), rtol=1e-5, atol=1e-5)
    assert torch.all(rowsum[n:] == 0)                            # padding rows are zero


def test_pack_rejects_bad_codes():
    with pytest.raises(ValueError, match="-8..7"):
        L.pack(torch.full((16, 32), 8, dtype=torch.int8), torch.ones(16, 1), 32)
    with pytest.raises(ValueError, match="group"):
        L.pack(torch.zeros(16, 48, dtype=torch.int8), torch.ones(16, 1), 32)
    with pytest.raises(ValueError, match="0..15"):
        L.pack(torch.full((16, 32), -1, dtype=torch.int8), torch.ones(16, 1), 32, mins=torch.zeros(16, 1))
    with pytest.raises(ValueError, match="shape"):
        L.pack(torch.zeros(16, 32, dtype=torch.uint8), torch.ones(16, 1), 32, mins=torch.zeros(16, 2))
    with pytest.raises(ValueError, match="scale_dtype"):
        L.pack(torch.zeros(16, 32, dtype=torch.int8), torch.ones(16, 1), 32, scale_dtype=torch.float32)


def _arith_case(n: int, k: int, group: int):
    """Codes and scales from arithmetic alone (no RNG), so the packed bytes are the same in every torch version."""
    i = torch.arange(n * k).reshape(n, k)
    codes = ((i * 7 + i // k * 3) % 16 - 8).to(torch.int8)
    scales = (torch.arange(n * (k // group)).reshape(n, k // group) % 13 + 1).float() * 0.0071
    return codes, scales


@pytest.mark.parametrize("n,k,group,digest", [
    (40, 256, 32, "d7b98d0df34c0ab7265af6428375e60ceba9dda8d25355c4c365951e94c5ea80"),
    (33, 384, 128, "c17da0b0561b0c77be00e6e4f0e01a7cdddf32fe4d8a6badd1108195ea2c5d02")])
def test_symmetric_bf16_pack_is_unchanged(n, k, group, digest):
    """Without mins, pack() writes the bytes it wrote before minimums and fp16 existed (digests taken from that
    version): exported artifacts and their kernels keep their layout bit for bit."""
    packed, scales, rowsum = q4.pack(*_arith_case(n, k, group), group)
    h = hashlib.sha256()
    for t in (packed, scales.view(torch.uint8), rowsum):
        h.update(t.numpy().tobytes())
    assert h.hexdigest() == digest


def _asym(n: int, k: int, group: int, dtype: torch.dtype = torch.float16, seed: int = 0):
    """Unsigned codes 0..15 with scales and mins exact in `dtype` (as a GGUF Q4_1 file's fp16 d and m), fp32 tensors
    as edgekit.quant's QuantizedTensor holds them; mins about -8 scales, so the weights are centred like real ones."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (n, k), generator=g, dtype=torch.uint8)
    scales = (torch.rand(n, k // group, generator=g) * 0.02 + 1e-3).to(dtype).float()
    mins = (-8 * scales * (1 + 0.3 * torch.randn(n, k // group, generator=g))).to(dtype).float()
    return codes, scales, mins


def _dequant(codes, scales, mins, group):
    """QuantizedTensor.dequantize's arithmetic: codes * scales + mins, the product rounded first (llama.cpp's)."""
    n, k = codes.shape
    w = codes.reshape(n, k // group, group).float() * scales[..., None] + mins[..., None]
    return w.reshape(n, k)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,k,group,chunk", [(16, 64, 32, 4096), (40, 256, 32, 4096), (70, 128, 32, 16)])
def test_pack_unpack_with_mins_round_trip(n, k, group, chunk, dtype, monkeypatch):
    monkeypatch.setattr(q4, "PACK_ROWS", chunk)
    codes, scales, mins = _asym(n, k, group, dtype)
    packed, s, rowsum, m = q4.pack(codes, scales, group, mins=mins, scale_dtype=dtype)
    npad = q4.padded_rows(n)
    assert s.dtype == m.dtype == dtype and s.numel() == m.numel() == npad * k // group
    dense = q4.unpack(packed, s, group, n, k, mins=m)
    assert torch.equal(dense, _dequant(codes, scales, mins, group))       # bit-exact: the file's own weights
    assert torch.allclose(rowsum[:n], dense.sum(dim=1), rtol=1e-5, atol=1e-5)
    assert torch.all(rowsum[n:] == 0) and torch.all(m.float().view(-1, k // group, 16)[n // 16 + 1:] == 0)


def test_fp16_keeps_gguf_values_that_bf16_would_round():
    """A Q4_1 file's fp16 d and m survive fp16 storage exactly; bf16 (8 mantissa bits) rounds them."""
    codes, scales, mins = _asym(32, 64, 32, torch.float16)
    exact = _dequant(codes, scales, mins, 32)
    p16, s16, _, m16 = q4.pack(codes, scales, 32, mins=mins, scale_dtype=torch.float16)
    pbf, sbf, _, mbf = q4.pack(codes, scales, 32, mins=mins)
    assert torch.equal(q4.unpack(p16, s16, 32, 32, 64, mins=m16), exact)
    assert not torch.equal(q4.unpack(pbf, sbf, 32, 32, 64, mins=mbf), exact)


def test_pack_quantized_takes_the_core_convention_and_a_lossless_dtype():
    """QuantizedTensor's form (codes uint8 0..15; symmetric w = s * (codes - 8), else s * codes + m) packs to the
    weight it dequantizes to; fp16-exact scales pick fp16, bf16-exact ones bf16, anything else fp16 (rounded)."""
    from types import SimpleNamespace

    codes, scales, mins = _asym(32, 64, 32, torch.float16)
    asym = SimpleNamespace(codes=codes, scales=scales, mins=mins, bits=4, group_size=32)
    packed, s, _, m = q4.pack_quantized(asym)
    assert s.dtype == torch.float16 and torch.equal(q4.unpack(packed, s, 32, 32, 64, mins=m),
                                                    _dequant(codes, scales, mins, 32))
    bf_scales = scales.to(torch.bfloat16).float() * 64   # exact in bf16, beyond fp16's 11 bits for some
    sym = SimpleNamespace(codes=codes, scales=bf_scales, mins=None, bits=4, group_size=32)
    assert q4.lossless_scale_dtype(bf_scales) in (torch.float16, torch.bfloat16)
    packed, s, _ = q4.pack_quantized(sym)
    want = (codes.float() - 8).view(32, 2, 32) * bf_scales[..., None]
    assert torch.equal(q4.unpack(packed, s, 32, 32, 64), want.view(32, 64))
    assert q4.lossless_scale_dtype(torch.tensor([1 + 2.0 ** -20])) is None
    with pytest.raises(ValueError, match="4-bit"):
        q4.pack_quantized(SimpleNamespace(codes=codes, scales=scales, mins=None, bits=8, group_size=32))


@pytest.mark.parametrize("act_per_group", [False, True])
def test_reference_with_mins_is_the_dequantized_linear(act_per_group):
    codes, scales, mins = _asym(48, 256, 32)
    packed, s, rowsum, m = q4.pack(codes, scales, 32, mins=mins, scale_dtype=torch.float16)
    x = torch.randn(5, 256) * 3
    xq = q4.fake_quantize_groups(x, 32) if act_per_group else q4.fake_quantize_activations(x)
    want = torch.nn.functional.linear(xq, _dequant(codes, scales, mins, 32))
    got = q4.reference_linear_q4(x, packed, s, rowsum, None, 32, 48, act_per_group=act_per_group, mins=m)
    _close(got, want)


@pytest.mark.parametrize("m", [1, 5])
def test_reference_equals_torchao_8da4w_linear(m):
    """The op's meaning is torchao's: int8 asymmetric per-token activations, int4 weights, fp32 linear."""
    w = _weight(48, 256, 64)
    lin = L.Q4Linear(w.qdata, w.scale.float().reshape(48, -1), 64, None)
    x = torch.randn(m, 256) * 4
    _close(lin(x), torch.nn.functional.linear(x, w))


@pytest.mark.parametrize("portable", [False, True])
@pytest.mark.parametrize("m,n,k,group", [(1, 896, 896, 128), (3, 152, 896, 64), (8, 40, 256, 32), (17, 100, 512, 128),
                                         (64, 128, 4864, 128)])
def test_kernel_matches_reference(kernel_lib, m, n, k, group, portable):
    from edgekit_executorch.kernels import direct

    lin = _q4(n, k, group, seed=m)
    x = torch.randn(m, k) * 3
    got = direct.linear_q4(x, lin.packed, lin.scales, lin.rowsum, lin.bias, group, n, portable=portable)
    _close(got, L.reference_linear_q4(x, lin.packed, lin.scales, lin.rowsum, lin.bias, group, n))


@pytest.mark.parametrize("m", [1, 9])
def test_fused_swiglu_norm_residual_matches_reference(kernel_lib, m):
    from edgekit_executorch.kernels import direct

    k, n, group = 256, 96, 32
    lin = _q4(n, k, group)
    x, norm, residual = torch.randn(m, 2 * k) * 2, torch.rand(k) + 0.5, torch.randn(m, n)
    got = direct.linear_q4(x, lin.packed, lin.scales, lin.rowsum, lin.bias, group, n, swiglu=True,
                           norm_weight=norm, norm_eps=1e-6, residual=residual)
    want = L.reference_fused_linear_q4(x, lin.packed, lin.scales, lin.rowsum, lin.bias, group, n, norm, 1e-6, True,
                                       residual)
    _close(got, want)


@pytest.mark.parametrize("qk_norm", [False, True])
@pytest.mark.parametrize("m", [1, 6])
def test_qkv_rope_matches_reference(kernel_lib, m, qk_norm):
    from edgekit_executorch.kernels import direct

    hq, hkv, hd, k, group = 4, 2, 16, 128, 32
    n = (hq + 2 * hkv) * hd
    lin = _q4(n, k, group)
    x, norm = torch.randn(m, k), torch.rand(k) + 0.5
    cos, sin = torch.randn(m, hd), torch.randn(m, hd)
    qn, kn = (torch.rand(hd) + 0.5, torch.rand(hd) + 0.5) if qk_norm else (None, None)
    got = direct.linear_q4(x, lin.packed, lin.scales, lin.rowsum, lin.bias, group, n, norm_weight=norm,
                           norm_eps=1e-6, cos=cos, sin=sin, q_norm_weight=qn, k_norm_weight=kn, heads=(hq, hkv, hd))
    want = L.reference_qkv_rope_q4(x, lin.packed, lin.scales, lin.rowsum, lin.bias, group, norm, 1e-6, cos, sin, hq,
                                   hkv, hd, qn, kn)
    _close(got, want)


def _q4_form(n: int, k: int, group: int, mins: bool, dtype: torch.dtype, seed: int = 0) -> L.Q4Linear:
    """A Q4Linear in any weight form: symmetric (torchao's codes) or with minimums, bf16 or fp16 scales."""
    if not mins:
        w = _weight(n, k, group, seed)
        return L.Q4Linear(w.qdata, w.scale.float().reshape(n, -1), group, torch.randn(n), scale_dtype=dtype)
    codes, scales, m = _asym(n, k, group, dtype, seed)
    return L.Q4Linear(codes, scales, group, torch.randn(n), mins=m, scale_dtype=dtype)


@pytest.mark.parametrize("portable", [False, True], ids=["simd", "portable"])
@pytest.mark.parametrize("act_per_group", [False, True], ids=["per-token", "per-group"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
@pytest.mark.parametrize("mins", [False, True], ids=["sym", "mins"])
@pytest.mark.parametrize("m,n,k,group", [(1, 96, 576, 32), (9, 40, 256, 64), (17, 100, 384, 128)])
def test_every_weight_form_matches_reference(kernel_lib, m, n, k, group, mins, dtype, act_per_group, portable):
    """mins x scale dtype x activation mode x (SIMD, scalar) tiles vs q4.reference_linear_q4 within REL_TOL."""
    from edgekit_executorch.kernels import direct

    lin = _q4_form(n, k, group, mins, dtype, seed=m)
    x = torch.randn(m, k) * 3
    got = direct.linear_q4(x, lin.packed, lin.scales, lin.rowsum, lin.bias, group, n, portable=portable,
                           mins=lin.mins, act_per_group=act_per_group)
    _close(got, q4.reference_linear_q4(x, lin.packed, lin.scales, lin.rowsum, lin.bias, group, n,
                                       act_per_group=act_per_group, mins=lin.mins))


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "fp16"])
def test_fused_forms_with_mins_match_reference(kernel_lib, dtype):
    """The fused prologues / epilogues (swiglu + norm + residual, norm + qkv + q/k norms + rotary) with minimums."""
    from edgekit_executorch.kernels import direct

    k, group, hq, hkv, hd, m = 128, 32, 4, 2, 16, 6
    lin = _q4_form(96, k, group, True, dtype)
    x, norm, residual = torch.randn(m, 2 * k) * 2, torch.rand(k) + 0.5, torch.randn(m, 96)
    got = direct.linear_q4(x, lin.packed, lin.scales, lin.rowsum, lin.bias, group, 96, swiglu=True,
                           norm_weight=norm, norm_eps=1e-6, residual=residual, mins=lin.mins)
    _close(got, L.reference_fused_linear_q4(x, lin.packed, lin.scales, lin.rowsum, lin.bias, group, 96, norm, 1e-6,
                                            True, residual, lin.mins))
    n = (hq + 2 * hkv) * hd
    qkv = _q4_form(n, k, group, True, dtype, seed=1)
    x, cos, sin, qn, kn = torch.randn(m, k), torch.randn(m, hd), torch.randn(m, hd), torch.rand(hd), torch.rand(hd)
    got = direct.linear_q4(x, qkv.packed, qkv.scales, qkv.rowsum, qkv.bias, group, n, norm_weight=norm,
                           norm_eps=1e-6, cos=cos, sin=sin, q_norm_weight=qn, k_norm_weight=kn, heads=(hq, hkv, hd),
                           mins=qkv.mins)
    _close(got, L.reference_qkv_rope_q4(x, qkv.packed, qkv.scales, qkv.rowsum, qkv.bias, group, norm, 1e-6, cos, sin,
                                        hq, hkv, hd, qn, kn, qkv.mins))


def test_op_with_mins_is_its_reference_and_exports():
    """torch.ops.edgekit.linear_q4 with mins runs the reference, and torch.export keeps mins as the op's argument."""
    lin = _q4_form(48, 128, 32, True, torch.float16)
    x = torch.randn(3, 128)
    want = q4.reference_linear_q4(x, lin.packed, lin.scales, lin.rowsum, lin.bias, 32, 48, mins=lin.mins)
    assert torch.equal(lin(x), want)
    ep = torch.export.export(lin, (x,), strict=False)
    calls = [n for n in ep.graph.nodes if n.op == "call_function" and "linear_q4" in str(n.target)]
    assert len(calls) == 1 and len(calls[0].args) == 8
    assert torch.equal(ep.module()(x), want)


def test_kernel_rejects_bad_shapes(kernel_lib):
    from edgekit_executorch.kernels import direct

    lin = _q4(16, 64, 32)
    with pytest.raises(ValueError, match="rejected"):
        direct.linear_q4(torch.randn(1, 64), lin.packed, lin.scales, lin.rowsum, lin.bias, 24, 16)  # group 24


# ---------------------------------------------------------------- every ISA build of the core, against its scalar loops
def _build(cxx: str, out: Path, flags: list[str]) -> Path:
    cmd = [cxx, "-std=c++17", "-O2", *flags, f"-I{CORE_CSRC}", str(CORE_CSRC / "linear_check_main.cpp"),
           "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stderr[-3000:]}"
    return out


def _run(cmd: list[str], isa: str) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    m = re.search(r"isa=(\S+) passed (\d+) of (\d+) cases", res.stdout)
    assert m and m.group(1) == isa and m.group(2) == m.group(3), res.stdout
    for form in ("sym bf16", "mins bf16", "mins fp16", "sym fp16"):   # every weight form, both activation modes
        assert f"{form}, per-token" in res.stdout and f"{form}, per-group" in res.stdout, res.stdout
    bad = subprocess.run([*cmd, "--corrupt"], capture_output=True, text=True, timeout=240, check=False)
    assert bad.returncode == 1 and "FAIL" in bad.stdout, "a corrupted weight must fail the check: " + bad.stdout


def _cpu_flags() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


NATIVE = [("avx512vnni", ["-mavx2", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni"],
           ("avx512f", "avx512bw", "avx512vl", "avx512_vnni")),
          ("avx2", ["-mavx2", "-mfma", "-mf16c"], ("avx2", "fma", "f16c")),
          ("avx2", ["-mavx2", "-mfma"], ("avx2", "fma")),          # no F16C: fp16 scales converted in scalar code
          ("portable", ["-DEDGEKIT_FORCE_PORTABLE"], ())]


@pytest.mark.parametrize("isa,flags,needs", NATIVE, ids=["avx512vnni", "avx2-f16c", "avx2", "portable"])
def test_native_builds_match_scalar_definition(tmp_path, isa, flags, needs):
    if needs and (platform.machine() not in ("x86_64", "AMD64") or not all(f" {f}" in _cpu_flags() for f in needs)):
        pytest.skip(f"host CPU lacks {needs}")
    _run([str(_build(shutil.which("g++") or "g++", tmp_path / f"lc_{isa}", flags))], isa)


def test_neon_dotprod_build_under_qemu(tmp_path):
    cxx, qemu = shutil.which("aarch64-linux-gnu-g++"), shutil.which("qemu-aarch64-static")
    if not (cxx and qemu):
        pytest.skip("needs apt packages g++-aarch64-linux-gnu and qemu-user-static (see .ci/run)")
    exe = _build(cxx, tmp_path / "lc_neon", ["-static", "-march=armv8.2-a+dotprod"])
    _run([qemu, str(exe)], "neon-dotprod")
