"""edgekit's int4 linear (linear_kernel 'edgekit'): the packed layout, the PyTorch references against torchao's 8da4w
linear, the compiled kernel (SIMD and scalar tiles, fused prologues and epilogues) against the references, and the
same kernel core built for every ISA (AVX-512 VNNI, AVX2, portable; NEON dot products under qemu) against its scalar
definition."""
from __future__ import annotations

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
    bad = subprocess.run([*cmd, "--corrupt"], capture_output=True, text=True, timeout=240, check=False)
    assert bad.returncode == 1 and "FAIL" in bad.stdout, "a corrupted weight must fail the check: " + bad.stdout


def _cpu_flags() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


NATIVE = [("avx512vnni", ["-mavx2", "-mfma", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni"],
           ("avx512f", "avx512bw", "avx512vl", "avx512_vnni")),
          ("avx2", ["-mavx2", "-mfma"], ("avx2", "fma")),
          ("portable", ["-DEDGEKIT_FORCE_PORTABLE"], ())]


@pytest.mark.parametrize("isa,flags,needs", NATIVE, ids=[n[0] for n in NATIVE])
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
