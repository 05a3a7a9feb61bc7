"""edgekit target plugin for iOS / macOS: a stateful Core ML ML program (.mlpackage).

This module stays light (no coremltools / torch import at module level): the registry loads it to list targets.
"""
from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.targets.base import Artifact, Capabilities
from edgekit.targets.options import Option
from edgekit.targets.schemes import SchemeBinding
from edgekit_coreml.storage import RUNTIME, STORAGE

if TYPE_CHECKING:
    from torch import nn

    from edgekit.model.edge_model import EdgeModel
    from edgekit.runtime.session import Session
    from edgekit.targets.base import TargetSpec

log = logging.getLogger(__name__)

KV_NOTE = ("Core ML states are fp16, so the KV cache is stored in fp16: kv_cache 'fp32' (the default) and 'fp16' "
           "both mean a float cache stored as fp16; an int8 cache cannot be held in a Core ML state")

# max |Δlogit| of the fp16 ML program vs the fp32 eager graph carrying the same (de)quantized weights, over export's
# prefill + 8 decode steps. fp16 rounding grows with depth and logit scale: tiny test models stay under 2e-2 (asserted
# in tests/coreml), SmolLM2-135M (30 layers, logits up to ~38) reaches ~0.1, Gemma 3 270M under quant 'source'
# (18 layers, logits up to ~35, a residual stream past 50,000) 0.23 (the eager graph itself in fp16: 0.25); a wrong
# cache write or mask costs whole logits. The bound is the same for w8/w4 because the reference carries the
# artifact's exact dequantized weights.
TOLERANCE = {"fp16": 0.25, "w8": 0.25, "w4": 0.25, "source": 0.25}


class CoreMLTarget:
    name = "coreml"
    aliases = ("ios",)
    platform = "ios"
    capabilities = Capabilities(
        quant_schemes=("fp16", "w8", "w4", "source"),   # source: a GGUF's own grids (source_grid.py)
        kv_cache=("fp32", "fp16"),
        dynamic_shapes=True,
        per_op_profiling=False,
        host_runnable=True,   # Core ML on macOS; the numpy ML-program evaluator elsewhere (slow, correctness only)
        options=(Option("min_ios", "int", None, 18, "the oldest iOS the model loads on (18 or later: the KV "
                        "cache lives in Core ML states)"),
                 Option("granularity", "str", ("per_block", "per_channel"), None, "w8 / w4 scales: per channel "
                        "(w8's default) or per block of the input axis (w4's default)"),
                 Option("block_size", "int", (16, 32, 64, 128), 32, "per_block: input channels per block")),
        default_quant="fp16",
        # what its builder implements (the RoPE tables, scaled or not, come from edgekit.model.graph.rope_tables)
        storage=STORAGE, runtime_figures=RUNTIME,
        model_features=("qk_norm", "attention_bias", "tied_embeddings", "rope_freq_factors", "rope_scaling_llama3",
                        # Gemma 3 (builder.py): GeGLU, scaled embeddings, sandwich norms, its softmax scale, and
                        # sliding layers over a ring state of window + RING_REWIND rows
                        "act_gelu_tanh", "embed_scale", "sandwich_norms", "query_scale", "sliding_window"),
        # the shared schemes: w8 per channel and w4 in blocks of 32, both by coremltools' round-to-nearest
        scheme_bindings=(SchemeBinding("fp16", "fp16"), SchemeBinding("w8", "w8", (("granularity", "per_channel"),)),
                         SchemeBinding("w4", "w4", (("granularity", "per_block"), ("block_size", 32))),
                         SchemeBinding("source", "source")),
        notes=KV_NOTE,
        load_dtype="float16",  # Core ML computes in fp16: a checkpoint path is loaded straight to fp16 (RSS)
    )

    def export(self, model: EdgeModel, spec: TargetSpec, out: Path) -> Artifact:
        from edgekit_coreml.convert import MODEL_FILE, export_coreml

        meta = export_coreml(model, spec, Path(out))
        return Artifact(path=Path(out), target=self.name, files=[MODEL_FILE], metadata=meta)

    def reference(self, model: EdgeModel, spec: TargetSpec) -> nn.Module:
        from edgekit_coreml.reference import reference_decoder

        return reference_decoder(model, spec)

    def tolerance(self, spec: TargetSpec) -> float:
        return TOLERANCE[spec.quant]

    def session(self, artifact: Artifact, **options: Any) -> Session:
        from edgekit_coreml.session import open_session

        return open_session(artifact, **options)

    def device_assets(self, artifact: Artifact) -> list[Path]:
        return []  # everything the app needs is inside the .mlpackage

    def standalone_session(self) -> Path | None:
        return None  # no ssh-board runner: Core ML runs inside an iOS / macOS app

    @staticmethod
    def host_is_macos() -> bool:
        return platform.system() == "Darwin"
