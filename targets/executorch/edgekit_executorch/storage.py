"""How this target's .pte stores each scheme's weights, for `edgekit plan` (edgekit.plan.layout). Bits per weight
include the scales: XNNPACK's int4 groups carry one bf16 scale per 32 weights, its int8 linears one fp32 scale per
output row; checked against real exports by tests/core/test_plan.py."""
from __future__ import annotations

from edgekit.plan.layout import RuntimeFigures, StorageLayout, bpw

INT4_G32 = bpw(4, 32, 2)     # 4.5
INT8_ROW = 8.06              # one fp32 scale per row of ~512+ inputs
# the delegates and edgekit's kernels pack the weights at load, beside the program's own buffer (bench_plan.py)
PACKED = 1.0
STORAGE = (
    StorageLayout("fp32", 32.0, runtime_share=PACKED),
    # embedding in float unless asked; the output layer as the linears
    StorageLayout("8da8w", INT8_ROW, embedding_bpw=32.0, output_bpw=INT8_ROW, separate_output=True,
                  runtime_share=PACKED),
    # embedding int4 per 32; the (tied) output layer its own int4 copy: the gather and the matmul take other layouts
    StorageLayout("8da4w", INT4_G32, embedding_bpw=INT4_G32, output_bpw=INT4_G32, separate_output=True,
                  runtime_share=PACKED),
    # a GGUF's 4-bit and Q8_0 grids as stored; other block types re-quantized to int8 per 32 (bf16 scale)
    StorageLayout("source", INT4_G32, runtime_share=PACKED, source_overrides=tuple((t, bpw(8, 32, 2)) for t in
                                                            ("Q5_0", "Q5_1", "Q6_K", "Q5_K", "Q3_K", "Q2_K"))),
)
# measured by benchmarks/bench_plan.py (SmolLM2-135M `source` .pte at max_seq_len 1024, this host): ExecuTorch holds
# the program's weights twice once loaded (the file's buffer and the kernels' packed form), plans one activation
# arena for the longest call (1,023 tokens: 5.6x edgekit's per-token estimate), and an all-logits program holds two
# 1,023-row logits buffers
RUNTIME = RuntimeFigures(fixed_bytes=4 << 20, planned_for_longest=True, activation_factor=5.6, logits_copies=2.0)
