"""Structure of the exported .pte: delegation, the LLM-runner metadata methods, sessions, profiling."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.targets.registry import get_target

pytestmark = pytest.mark.slow


def test_every_linear_is_delegated(exported, tiny_model):
    for quant in ("fp32", "8da4w"):
        art = exported("llama", quant)
        d = art.metadata["delegation"]
        assert d["undelegated_linears"] == []
        assert not any(op in d["portable_ops"] for op in ("linear", "mm", "addmm", "bmm"))
        layers = tiny_model("llama").config.num_layers
        # 7 projections per layer + the output layer (+ the norms' mean-as-linear in both)
        assert d["delegated_ops"]["aten_linear_default"] >= 7 * layers + 1
        assert d["delegated_subgraphs"] >= 1 and d["delegated_nodes"] > 0
        assert set(d["portable_ops"]) >= {"llama"}  # update_cache / custom_sdpa run as ExecuTorch LLM kernels


@pytest.mark.parametrize("case", ["llama", "qwen3"])
def test_each_layer_is_one_delegate_subgraph(exported, tiny_model, case):
    """Between two layers' attention ops everything runs in one XNNPACK subgraph (o_proj, norms, MLP, the next
    layer's q/k/v and rotary): a rotary built from dynamic-length slices, a reshape to the symbolic length, or a
    per-layer `.item()` of input_pos would add portable kernels and a second delegate call per layer and step."""
    art = exported(case, "8da4w")
    d = art.metadata["delegation"]
    layers = tiny_model(case).config.num_layers
    assert d["delegated_subgraphs"] == layers + 1, d
    portable = d["portable_ops"]
    for op in ("slice_copy", "view_copy", "cat"):
        assert op not in portable, f"{op} left XNNPACK: {portable}"
    assert portable.get("unsqueeze_copy", 0) <= 4, portable           # cos/sin shaped once, not per layer
    assert portable.get("_local_scalar_dense", 0) == 1, portable      # the start position is read once
    assert portable.get("auto_functionalized_v2", 0) == 2 * layers, portable  # update_cache for K and V


def test_undelegated_linear_warns(caplog):
    """A linear left in a portable kernel is named in a WARNING (forced here by lowering without a partitioner)."""
    import logging

    import torch
    from edgekit_executorch.delegation import delegation_summary
    from executorch.exir import to_edge

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(8, 4)

        def forward(self, x):
            return self.proj(x)

    ep = torch.export.export(Head().eval(), (torch.randn(1, 8),))
    with caplog.at_level(logging.WARNING, logger="edgekit_executorch.delegation"):
        summary = delegation_summary(to_edge(ep).exported_program())
    assert summary["undelegated_linears"] == ["proj"]
    assert any("proj" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_metadata_methods(exported, tiny_model):
    from edgekit_executorch.standalone_session import _prepare_runtime
    from executorch.runtime import Runtime

    art = exported("qwen3", "fp32")
    model = tiny_model("qwen3")
    _prepare_runtime(art.path, art.metadata)
    program = Runtime.get().load_program(art.main_file)
    want = {"get_max_seq_len": 64, "get_max_context_len": 64, "get_vocab_size": model.config.vocab_size,
            "get_n_layers": model.config.num_layers, "use_kv_cache": True, "enable_dynamic_shape": True}
    for name, value in want.items():
        assert program.load_method(name).execute([])[0] == value, name
    eos = list(program.load_method("get_eos_ids").execute([]))
    assert eos == list(model.stop_ids) and eos
    bos = program.load_method("get_bos_id").execute([])[0]
    assert bos == (model.config.bos_token_id if model.config.bos_token_id is not None else -1) or bos >= 0
    assert {"forward", "get_bos_id"} <= program.method_names


def test_session_reset_and_dynamic_lengths(exported):
    art = exported("qwen2", "fp32")
    sess = get_target("android").session(art)
    prompt = np.asarray([[5, 9, 17, 33, 2, 8, 1, 40, 41, 42, 43]], dtype=np.int64)
    first = sess.forward(prompt, np.arange(prompt.shape[1]))
    assert first.shape == (1, prompt.shape[1], 512)
    sess.forward(np.asarray([[7]]), np.asarray([prompt.shape[1]]))
    sess.reset()
    short = sess.forward(prompt[:, :4], np.arange(4))  # a different length after reset: the same as a fresh session
    fresh = get_target("android").session(art).forward(prompt[:, :4], np.arange(4))
    np.testing.assert_array_equal(short, fresh)
    np.testing.assert_allclose(short, first[:, :4], atol=1e-5)  # causal: prefixes agree
    with pytest.raises(ValueError, match="max_seq_len 64"):
        sess.forward(np.asarray([[1]]), np.asarray([64]))


def test_session_logits_are_the_callers_own(exported):
    """forward() reads the runtime's output buffer without the pybindings' clone; the array it returns must be a
    copy, untouched by the next forward (which reuses that buffer) and writable."""
    art = exported("qwen2", "fp32")
    sess = get_target("android").session(art)
    first = sess.forward(np.asarray([[5, 9, 17]], dtype=np.int64), np.arange(3))
    kept = first.copy()
    second = sess.forward(np.asarray([[7, 7, 7]], dtype=np.int64), np.arange(3, 6))
    np.testing.assert_array_equal(first, kept)
    assert not np.array_equal(first, second) and not np.shares_memory(first, second)
    first[0, 0, 0] = 1.0  # the caller may write into it


def test_op_profile(exported):
    art = exported("llama", "8da4w")
    rows = get_target("android").session(art, threads=1).profile(prompt=list(range(1, 9)), decode_steps=3)
    assert rows, "no per-op rows from ETDump"
    assert all({"name", "op_type", "calls", "total_ms"} <= set(r) for r in rows)
    assert sum(r["total_ms"] for r in rows) > 0
    names = {r["name"] for r in rows}
    assert any("custom_sdpa" in n or "update_cache" in n for n in names), names
    assert any(r["op_type"] == "delegate" for r in rows), rows


def test_standalone_session_reads_artifact_folder(exported):
    """The standalone runner opens a saved artifact folder by itself (what boards and bundles use)."""
    import importlib.util

    path = get_target("android").standalone_session()
    spec = importlib.util.spec_from_file_location("et_standalone", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    art = exported("llama", "fp32")
    sess = mod.open_session(art.path, threads=2)
    out = sess.forward(np.asarray([[3, 4, 5]], dtype=np.int64), np.arange(3, dtype=np.int64))
    assert out.dtype == np.float32 and out.shape == (1, 3, 512) and sess.max_seq_len == 64
    source = path.read_text()
    assert "import edgekit" not in source and "from edgekit" not in source
