"""edgekit's ONNX Runtime kernel library (linear_kernel 'edgekit'): each op in an ORT session against the core's PyTorch
definition (edgekit/kernels/q4.py), its argument checks, the build cache and where the ORT headers come from."""
from __future__ import annotations

import hashlib
import io
import tarfile

import numpy as np
import onnxruntime as ort
import pytest
import torch
from edgekit_onnx.kernels import build, headers
from onnx import TensorProto, helper

from edgekit.errors import MissingDependency
from edgekit.kernels import q4

REL_TOL = 1e-5   # the same integer dots as the reference; only fp32 summation order differs


@pytest.fixture(scope="session")
def kernel_lib():
    return build.build_library()


def _session(lib, nodes, inputs, inits, threads=2):
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("edgekit", 1)])
    model.ir_version = 9
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.register_custom_ops_library(str(lib))
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _init(name, array, dtype):
    return helper.make_tensor(name, dtype, array.shape, np.ascontiguousarray(array).tobytes(), raw=True)


def _table(n, k, group, seed=0):
    torch.manual_seed(seed)
    codes = torch.randint(-8, 8, (n, k), dtype=torch.int8)
    packed, scales, rowsum = q4.pack(codes, torch.rand(n, k // group) * 0.02 + 1e-3, group)
    inits = [_init("p", packed.numpy(), TensorProto.UINT8),
             _init("s", scales.view(torch.int16).numpy(), TensorProto.BFLOAT16),
             _init("r", rowsum.numpy(), TensorProto.FLOAT)]
    return packed, scales, rowsum, inits


def _close(got, want):
    err = float(np.abs(got - want).max())
    tol = REL_TOL * max(1.0, float(np.abs(want).max()))
    assert err <= tol, f"max |Δ| {err:.3g} > {tol:.3g}"


@pytest.mark.parametrize("act_per_group", [1, 0])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("m,n,k,group,swiglu,bias", [
    (1, 896, 896, 128, 0, False),     # a decode step of the 0.5B model's o-projection
    (64, 152, 896, 64, 0, True),      # prefill, bias, N not a multiple of the 16-row tile
    (3, 40, 256, 32, 1, False),       # SwiGLU prologue (X is [.., 2K])
    (9, 100, 576, 64, 1, True),       # SmolLM2's width, 8-token blocks and a tail
])
def test_linear_q4_matches_reference(kernel_lib, m, n, k, group, swiglu, bias, act_per_group, threads):
    packed, scales, rowsum, inits = _table(n, k, group, seed=m)
    b = torch.randn(n) if bias else None
    names = ["x", "p", "s", "r"] + (["b"] if bias else [])
    if bias:
        inits.append(_init("b", b.numpy(), TensorProto.FLOAT))
    node = helper.make_node("LinearQ4", names, ["y"], domain="edgekit", K=k, N=n, group_size=group, swiglu=swiglu,
                            act_per_group=act_per_group)
    x = torch.randn(1, m, 2 * k if swiglu else k) * 3
    sess = _session(kernel_lib, [node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, None, x.shape[-1]])],
                    inits, threads)
    got = sess.run(None, {"x": x.numpy()})[0]
    assert got.shape == (1, m, n)
    xin = torch.nn.functional.silu(x[..., :k]) * x[..., k:] if swiglu else x
    want = q4.reference_linear_q4(xin, packed, scales, rowsum, b, group, n, act_per_group=bool(act_per_group))
    _close(got, want.numpy())


def test_per_group_activations_are_matmulnbits_level_4(kernel_lib):
    """act_per_group is MatMulNBits' accuracy level 4: the same codes, fp32 scales that are exact in bf16, give the
    same output as ORT's own MatMulNBits (only fp32 summation order differs)."""
    from edgekit_onnx.quant import pack_blockwise

    n, k, group = 48, 256, 64
    torch.manual_seed(3)
    w = (torch.randn(n, k) * 0.05).to(torch.bfloat16).float()
    mnb_packed, mnb_scales = pack_blockwise(w.numpy(), 4, group)
    mnb_scales = torch.from_numpy(mnb_scales).to(torch.bfloat16).float().numpy()   # representable in bf16 exactly
    flat = mnb_packed.reshape(n, -1)
    codes = np.empty((n, k), np.int8)
    codes[:, 0::2], codes[:, 1::2] = (flat & 0x0F).astype(np.int8) - 8, (flat >> 4).astype(np.int8) - 8
    packed, scales, rowsum = q4.pack(torch.from_numpy(codes), torch.from_numpy(mnb_scales), group)
    inits = [_init("p", packed.numpy(), TensorProto.UINT8), _init("s", scales.view(torch.int16).numpy(),
             TensorProto.BFLOAT16), _init("r", rowsum.numpy(), TensorProto.FLOAT),
             _init("wq", mnb_packed, TensorProto.UINT8), _init("ws", mnb_scales.reshape(-1), TensorProto.FLOAT)]
    nodes = [helper.make_node("LinearQ4", ["x", "p", "s", "r"], ["a"], domain="edgekit", K=k, N=n, group_size=group),
             helper.make_node("MatMulNBits", ["x", "wq", "ws"], ["b"], domain="com.microsoft", K=k, N=n, bits=4,
                              block_size=group, accuracy_level=4),
             helper.make_node("Sub", ["a", "b"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("edgekit", 1),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 9
    opts = ort.SessionOptions()
    opts.register_custom_ops_library(str(kernel_lib))
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    diff, ref = sess.run(None, {"x": (torch.randn(5, k) * 2).numpy()})
    assert float(np.abs(diff).max()) <= REL_TOL * max(1.0, float(np.abs(ref).max()))


@pytest.mark.parametrize("n,k,group", [(151, 896, 128), (40, 576, 64)])
def test_gather_q4_returns_the_dequantized_rows(kernel_lib, n, k, group):
    packed, scales, _, inits = _table(n, k, group)
    node = helper.make_node("GatherQ4", ["p", "s", "ids"], ["y"], domain="edgekit", K=k, N=n, group_size=group)
    sess = _session(kernel_lib, [node], [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, None])], inits[:2])
    ids = np.array([[0, n - 1, 17, 17, 5]], dtype=np.int64)
    got = sess.run(None, {"ids": ids})[0]
    assert got.shape == (1, 5, k)
    assert np.array_equal(got[0], q4.unpack(packed, scales, group, n, k)[ids[0]].numpy())   # exact: codes * scale


def test_ops_reject_bad_arguments_by_name(kernel_lib):
    _, _, _, inits = _table(40, 256, 32)
    bad_attrs = helper.make_node("LinearQ4", ["x", "p", "s", "r"], ["y"], domain="edgekit", K=256, N=48,
                                 group_size=32)   # N=48 needs 48 padded rows, the table holds 48 = 3 tiles of 40
    sess = _session(kernel_lib, [helper.make_node("LinearQ4", ["x", "p", "s", "r"], ["y"], domain="edgekit", K=256,
                                                  N=40, group_size=24)],
                    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])], inits)
    with pytest.raises(Exception, match="group_size in 8..256, a multiple of 8 dividing K; got K=256 N=40 group_size=24"):
        sess.run(None, {"x": np.zeros((1, 256), np.float32)})
    sess = _session(kernel_lib, [bad_attrs], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])], inits)
    assert sess.run(None, {"x": np.zeros((1, 256), np.float32)})[0].shape == (1, 48)  # 40 and 48 both pad to 48 rows
    wrong_n = helper.make_node("LinearQ4", ["x", "p", "s", "r"], ["y"], domain="edgekit", K=256, N=100, group_size=32)
    sess = _session(kernel_lib, [wrong_n], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])], inits)
    with pytest.raises(Exception, match="the tiled layout of N=100 K=256 needs 14336 / 896 / 112"):
        sess.run(None, {"x": np.zeros((1, 256), np.float32)})
    wide = _session(kernel_lib, [helper.make_node("LinearQ4", ["x", "p", "s", "r"], ["y"], domain="edgekit", K=256,
                                                  N=40, group_size=32)],
                    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, None])], inits)
    with pytest.raises(Exception, match="X's last dimension must be 256, got 200"):
        wide.run(None, {"x": np.zeros((1, 200), np.float32)})
    gather = _session(kernel_lib, [helper.make_node("GatherQ4", ["p", "s", "ids"], ["y"], domain="edgekit", K=256,
                                                    N=40, group_size=32)],
                      [helper.make_tensor_value_info("ids", TensorProto.INT64, [None])], inits[:2])
    with pytest.raises(Exception, match="index 40 is outside the table's 40 rows"):
        gather.run(None, {"ids": np.array([3, 40], np.int64)})


def test_library_is_built_once_per_content_hash(kernel_lib, monkeypatch):
    mtime = kernel_lib.stat().st_mtime_ns
    calls = []
    real_run = build.core_build.subprocess.run
    monkeypatch.setattr(build.core_build.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or real_run(cmd, **kw))
    again = build.build_library()
    assert again == kernel_lib and again.stat().st_mtime_ns == mtime
    assert not any(str(build.SOURCE) in map(str, c) for c in calls)   # only `g++ --version`: nothing compiled
    assert kernel_lib.parent.name.startswith("ort-")


def test_headers_come_from_the_environment_first(monkeypatch, tmp_path):
    found = headers.find()
    assert found is not None, "make setup fetches the ONNX Runtime headers into the cache"
    for name in headers.NEEDED:
        (tmp_path / name).write_bytes((found / name).read_bytes())
    monkeypatch.setenv("EDGEKIT_ORT_INCLUDE_DIR", str(tmp_path))
    assert headers.find() == tmp_path
    monkeypatch.setenv("EDGEKIT_ORT_INCLUDE_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(MissingDependency, match="does not hold ONNX Runtime's headers"):
        headers.find()


def _fake_deb(files: dict[str, bytes]) -> bytes:
    """A Debian package (ar archive) whose data.tar.xz holds `files` under usr/include/onnxruntime/."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"./usr/include/onnxruntime/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    members = [("debian-binary", b"2.0\n"), ("data.tar.xz", buf.getvalue())]
    out = b"!<arch>\n"
    for name, data in members:
        out += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode() + data
        out += b"\n" if len(data) % 2 else b""
    return out


def test_fetch_checks_the_hash_and_unpacks_atomically(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("EDGEKIT_ORT_INCLUDE_DIR", raising=False)
    deb = _fake_deb({name: f"// {name}\n".encode() for name in headers.NEEDED})
    src = tmp_path / "pkg.deb"
    src.write_bytes(deb)
    with pytest.raises(MissingDependency, match="has sha256 .*, expected 00"):
        headers.fetch(src.as_uri(), "00" * 32)
    assert not headers.cached_dir().exists()
    partial = _fake_deb({"onnxruntime_c_api.h": b"//\n"})
    (tmp_path / "partial.deb").write_bytes(partial)
    with pytest.raises(MissingDependency, match="lacks onnxruntime_cxx_api.h"):
        headers.fetch((tmp_path / "partial.deb").as_uri(), hashlib.sha256(partial).hexdigest())
    assert not headers.cached_dir().exists() and not any(headers.cached_dir().parent.iterdir())  # nothing half-written
    got = headers.fetch(src.as_uri(), hashlib.sha256(deb).hexdigest())
    assert got == headers.cached_dir() and (got / "onnxruntime_lite_custom_op.h").read_text().startswith("//")
