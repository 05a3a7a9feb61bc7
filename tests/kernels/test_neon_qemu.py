"""ARM64: the NEON path cross-compiled (g++-aarch64-linux-gnu) into the standalone checker and run under
qemu-aarch64-static against reference outputs written by the PyTorch reference. The same checker built
natively (AVX2 and portable paths) runs the same cases; a corrupted expectation must make it fail.

Needs the Debian packages g++-aarch64-linux-gnu and qemu-user-static (.ci/run installs them)."""
from __future__ import annotations

import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from kernel_cases import ATOL, make_case, write_cases

CSRC = Path(__file__).resolve().parents[2] / "targets" / "executorch" / "edgekit_executorch" / "kernels" / "csrc"
MAIN = CSRC / "kernel_check_main.cpp"
# (hq, hkv, d, ctx, t, splits): GQA 1/2/7, D 64/128, tile edges (64 for D=64, 32 for D=128) +-1, splits merged
CASES = [(2, 2, 64, 1, 1, 0), (4, 2, 64, 63, 1, 0), (14, 2, 64, 65, 1, 3), (14, 2, 64, 129, 128, 0),
         (4, 2, 128, 33, 1, 2), (2, 2, 128, 31, 16, 0), (14, 2, 128, 300, 128, 4), (7, 1, 64, 1025, 1, 5),
         (6, 3, 24, 50, 5, 0),   # D=24: SIMD column tails (no full 32/64-column block)
         (4, 2, 12, 40, 3, 2)]   # D=12: not a multiple of 8, the primitives fall back to the portable loops


def compile_checker(cxx: str, out: Path, flags: list[str]) -> Path:
    cmd = [cxx, "-std=c++17", "-O2", *flags, f"-I{CSRC}", str(MAIN), "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stderr[-3000:]}"
    return out


def run_checker(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=240, check=False)


@pytest.fixture(scope="module")
def cases_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("neon") / "cases.bin"
    cases = [make_case(hq, hkv, d, ctx, t, seed=i) for i, (hq, hkv, d, ctx, t, _) in enumerate(CASES)]
    write_cases(path, cases, [c[-1] for c in CASES])
    return path


def assert_all_passed(res: subprocess.CompletedProcess, isa: str) -> None:
    assert res.returncode == 0, res.stdout + res.stderr
    m = re.search(r"isa=(\w+) passed (\d+) of (\d+) cases", res.stdout)
    assert m, res.stdout
    assert m.group(1) == isa and int(m.group(2)) == int(m.group(3)) == len(CASES), res.stdout


def test_neon_path_under_qemu_matches_reference(cases_file, tmp_path):
    cxx, qemu = shutil.which("aarch64-linux-gnu-g++"), shutil.which("qemu-aarch64-static")
    if not (cxx and qemu):
        pytest.skip("needs apt packages g++-aarch64-linux-gnu and qemu-user-static (see .ci/run)")
    exe = compile_checker(cxx, tmp_path / "check_neon", ["-static", "-march=armv8-a"])
    assert "aarch64" in subprocess.run(["file", str(exe)], capture_output=True, text=True, check=False).stdout \
        or shutil.which("file") is None
    res = run_checker([qemu, str(exe), str(cases_file)])
    assert_all_passed(res, "neon")
    # the checker must be able to fail: flip one expected output value beyond tolerance
    bad = tmp_path / "bad.bin"
    data = bytearray(cases_file.read_bytes())
    _corrupt_first_expected(data)
    bad.write_bytes(bytes(data))
    res_bad = run_checker([qemu, str(exe), str(bad)])
    assert res_bad.returncode == 1 and "FAIL" in res_bad.stdout, res_bad.stdout


@pytest.mark.parametrize("isa,flags", [("avx2", ["-mavx2", "-mfma"]), ("portable", ["-DEDGEKIT_FORCE_PORTABLE"])])
def test_native_checker_paths_match_reference(cases_file, tmp_path, isa, flags):
    if isa == "avx2" and (platform.machine() not in ("x86_64", "AMD64") or " avx2" not in _cpuinfo()):
        pytest.skip("host has no AVX2")
    exe = compile_checker(shutil.which("g++") or "g++", tmp_path / f"check_{isa}", flags)
    assert_all_passed(run_checker([str(exe), str(cases_file)]), isa)


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _corrupt_first_expected(data: bytearray) -> None:
    """Adds 10 * ATOL to the first expected output float of case 0 (offsets per kernel_check_main.cpp)."""
    import struct

    off = 4 + 8
    t, hq, hkv, d, s, _ = struct.unpack_from("<6q", data, off)
    off += 48 + 4
    off += 4 * t * hq * d + 2 * s * hkv * d + 8 * s * hkv + 8 * t  # q, k, v, ks, vs, pos
    (val,) = struct.unpack_from("<f", data, off)
    struct.pack_into("<f", data, off, val + 10 * ATOL)
