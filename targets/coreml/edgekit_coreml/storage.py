"""How this target's .mlpackage stores each scheme's weights, for `edgekit plan` (edgekit.plan.layout): fp16
tensors, int8 per channel, int4 per block of 32 with fp16 scales; a KV state in fp16. Checked against real exports
by tests/core/test_plan.py."""
from __future__ import annotations

from edgekit.plan.layout import RuntimeFigures, StorageLayout, bpw

STORAGE = (
    StorageLayout("fp16", 16.0, float_bytes=2.0, kv_bytes=2.0),
    StorageLayout("w8", 8.03, embedding_bpw=8.03, float_bytes=2.0, kv_bytes=2.0),
    StorageLayout("w4", bpw(4, 32, 2), embedding_bpw=bpw(4, 32, 2), float_bytes=2.0, kv_bytes=2.0),
    StorageLayout("source", bpw(4, 32, 2), float_bytes=2.0, kv_bytes=2.0),
)
# not measured: Core ML runs on Apple devices only (the Linux evaluator's memory says nothing about them)
RUNTIME = RuntimeFigures()
