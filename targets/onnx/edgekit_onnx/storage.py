"""How this target's model.onnx stores each scheme's weights, for `edgekit plan` (edgekit.plan.layout).
MatMulNBits int4 blocks of 128 with one fp32 scale each (no zero points), the tied embedding the same int4 table;
checked against real exports by tests/core/test_plan.py."""
from __future__ import annotations

from edgekit.plan.layout import RuntimeFigures, StorageLayout, bpw

# ONNX Runtime prepacks MatMulNBits weights into its kernels' layout and keeps that copy beside the initializers
# (measured by benchmarks/bench_plan.py: SmolLM2's int4 model.onnx)
PREPACKED = 1.0
STORAGE = (
    StorageLayout("fp32", 32.0),
    StorageLayout("fp16", 16.0, float_bytes=2.0),
    StorageLayout("int4", bpw(4, 128, 4), embedding_bpw=bpw(4, 128, 4), runtime_share=PREPACKED),
    # a GGUF's grids in MatMulNBits (zero points for Q4_1's minimums); block types it has no grid for as int8 per 32
    StorageLayout("source", bpw(4, 32, 4), runtime_share=PREPACKED,
                  source_overrides=tuple((t, bpw(8, 32, 4)) for t in ("Q5_0", "Q5_1", "Q6_K", "Q5_K", "Q3_K", "Q2_K"))),
)
# measured by benchmarks/bench_plan.py (SmolLM2-135M, this host): buffers sized to the call made; decode reaches
# 0.42 of the read-bandwidth bound (MatMulNBits is not bandwidth-bound at 135M)
RUNTIME = RuntimeFigures(fixed_bytes=5 << 20, decode_efficiency=0.42)
