"""Run only the XNNPACK delegate passes that can match a partition.

XnnpackBackend.preprocess runs its 17 passes on every partition, and each ExportPass-based pass retraces the
partition with fake tensors. A decoder lowered with ExecuTorch's custom SDPA splits into two partitions per layer, so
SmolLM2 (30 layers) runs ~1000 pass retraces. Five of those passes rewrite ops a decoder never holds (bilinear
upsampling, batch norm, conv1d, PReLU) and one rewrites a decomposed SDPA (softmax) that only the eager-attention
graph has. They are skipped only when the partition has none of the ops they rewrite, so the lowered program is the
same; measured on a 4-layer tiny llama (9 partitions) this removes ~20 % of lowering time.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

log = logging.getLogger(__name__)

# pass class name -> edge op names (OpOverload.__name__ prefixes) it rewrites; skipped when none occur
_TRIGGERS: dict[str, tuple[str, ...]] = {
    "ConvertToUpsampleBilinear2d": ("aten._unsafe_index", "aten.index", "aten.upsample"),
    "FuseBatchNormPass": ("aten.native_batch_norm", "aten._native_batch_norm"),
    "DecomposeBatchNorm": ("aten.native_batch_norm", "aten._native_batch_norm"),
    "Conv1dUnsqueezePass": ("aten.convolution",),
    "PReLUReshapePass": ("aten._prelu_kernel", "aten.prelu"),
    "ConvertToSDPAPass": ("aten._softmax", "aten.softmax", "aten.scaled_dot_product_attention"),
    "FuseActivationPass": ("aten.relu", "aten.hardtanh"),
    "RemoveGetItemPass": ("aten.max_pool2d_with_indices", "aten.max.dim"),
    "DecomposeConcatenate": ("aten.cat",),
}


def _op_names(graph_module) -> set[str]:
    names = set()
    for node in graph_module.graph.nodes:
        if node.op == "call_function":
            name = getattr(node.target, "__name__", str(node.target))
            ns = getattr(node.target, "namespace", None)
            names.add(f"{ns}.{name}" if ns and not name.startswith(f"{ns}.") else name)
    return names


def needed_passes(passes: list[type], graph_module) -> list[type]:
    """`passes` without those whose trigger ops are all absent from graph_module."""
    ops = _op_names(graph_module)
    keep = []
    for p in passes:
        triggers = _TRIGGERS.get(p.__name__)
        if triggers is None or any(op.startswith(t) for op in ops for t in triggers):
            keep.append(p)
    return keep


@contextlib.contextmanager
def only_needed_passes() -> Iterator[None]:
    """Within the block, XnnpackBackend.preprocess runs needed_passes() of its default list."""
    from executorch.backends.xnnpack import xnnpack_preprocess
    from executorch.backends.xnnpack._passes import XNNPACKPassManager

    class Filtered(XNNPACKPassManager):
        def __init__(self, exported_program, passes=None):
            super().__init__(exported_program, passes)
            if passes is None:
                self.passes = needed_passes(self.passes, exported_program.graph_module)

    original = xnnpack_preprocess.XNNPACKPassManager
    xnnpack_preprocess.XNNPACKPassManager = Filtered
    try:
        yield
    finally:
        xnnpack_preprocess.XNNPACKPassManager = original
