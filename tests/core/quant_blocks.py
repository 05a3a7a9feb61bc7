"""Random but valid GGUF blocks for every block type: random bytes with sane fp16 scale fields, so any bit pattern
of the codes, sub-block scales and minimums is exercised (gguf.quants cannot write K-quants)."""
from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

# byte offsets of each block's fp16 fields (d, and dmin/m where the type has one)
FP16_FIELDS = {"Q4_0": (0,), "Q4_1": (0, 2), "Q5_0": (0,), "Q5_1": (0, 2), "Q8_0": (0,), "Q2_K": (80, 82),
               "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}
K_QUANTS = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")


def random_blocks(type_name: str, n_rows: int, n_cols: int, rng: np.random.Generator, scale: float = 1e-3) -> np.ndarray:
    """uint8 [n_rows, row bytes]: random blocks of `type_name` whose fp16 fields are ~N(0, scale)."""
    block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType[type_name]]
    raw = rng.integers(0, 256, size=(n_rows, n_cols // block * type_size), dtype=np.uint8)
    blocks = raw.reshape(-1, type_size)
    for pos in FP16_FIELDS[type_name]:
        halves = (rng.standard_normal(blocks.shape[0]) * scale).astype(np.float16)
        blocks[:, pos:pos + 2] = halves.view(np.uint8).reshape(-1, 2)
    return raw
