"""export(): build (graph from weights), quantize (block-wise packing), serialize (model.onnx [+ .data]), genai files."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit import progress
from edgekit.errors import ExportError, UnsupportedOption
from edgekit.model import pages
from edgekit.targets.base import Artifact
from edgekit_onnx import serialize
from edgekit_onnx.attention import PAST_KEY, PAST_VALUE, PRESENT_KEY, PRESENT_VALUE, kv_cache_lowering
from edgekit_onnx.builder import IR_VERSION, MS_OPSET, OPSET, build_graph, estimate_initializer_bytes, quantize_weights
from edgekit_onnx.genai import write_genai_files
from edgekit_onnx.quant import QuantPlan, linear_in_features, plan_for
from edgekit_onnx.serialize import DATA_SUFFIX, TensorSink, save_model

if TYPE_CHECKING:
    from edgekit.model.config import ModelConfig
    from edgekit.model.edge_model import EdgeModel
    from edgekit.targets.base import TargetSpec

log = logging.getLogger(__name__)
MODEL_FILE = "model.onnx"
EXTERNAL_DATA_CHOICES = ("auto", "always")


def export_onnx(model: EdgeModel, spec: TargetSpec, out: Path) -> Artifact:
    cfg = model.config
    plan = plan_for(spec.quant, spec.options, linear_in_features(cfg))
    kv = kv_cache_lowering(spec.kv_cache)
    if cfg.head_dim % 2 or cfg.head_dim > 256:
        raise UnsupportedOption(f"head_dim {cfg.head_dim} is outside what GroupQueryAttention supports (even, <= 256)")
    ext = spec.options.get("external_data", "auto")
    if ext not in EXTERNAL_DATA_CHOICES:
        raise UnsupportedOption(f"external_data={ext!r}; accepted: {', '.join(EXTERNAL_DATA_CHOICES)}")
    kernel_files = _kernel_library(out) if plan.edgekit_kernel else []   # compiled (or cached) before any heavy work
    estimate = estimate_initializer_bytes(cfg, plan)
    external = ext == "always" or serialize.needs_external_data(estimate, serialize.EXTERNAL_THRESHOLD)
    packed: dict[str, tuple] = {}
    grids, float_weights = source_grids(model, plan)
    quantizer_meta: dict[str, Any] = {}
    if plan.quantizer != "rtn":
        from edgekit_onnx.quantizer import quantizer_grids

        with progress.current().stage(plan.quantizer):
            grids, quantizer_meta = quantizer_grids(model, plan)
    if plan.linear_bits or plan.embedding_bits or plan.output_bits:
        with progress.current().stage("quantize"):
            packed = quantize_weights(cfg, model.weights, plan, skip=set(grids))
        pages.release(model.weights.values())   # packed: the checkpoint's pages go back (what build reads re-faults)
    sink = TensorSink(out / (MODEL_FILE + DATA_SUFFIX) if external else None)
    try:
        with progress.current().stage("build"):
            proto, op_counts = build_graph(cfg, model.weights, plan, sink, spec.max_seq_len, spec.last_logits_only,
                                           kv, packed, grids)
    except ValueError as e:
        raise ExportError(f"building the ONNX graph failed: {e}") from e
    finally:
        sink.close()
    with progress.current().stage("serialize"):
        files = save_model(proto, out / MODEL_FILE)
        del proto
        if kv.name != "int8":   # genai_config.json cannot describe the int8 cache's scale tensors
            files += write_genai_files(model, out, spec.max_seq_len, MODEL_FILE, custom_ops_library=next(
                iter(kernel_files), None))
    files += kernel_files
    metadata = _metadata(model, spec, plan, op_counts, sink.total_bytes, external)
    if cfg.has_sliding_layers:
        metadata["sliding_window"] = sliding_window_metadata(cfg, spec.max_seq_len)
    metadata["custom_op_libraries"] = kernel_files
    if quantizer_meta:
        metadata["quantizer"] = quantizer_meta
    elif plan.scheme == "int4":
        metadata["quantizer"] = {"quantizer": "rtn"}
    if grids and plan.scheme == "source":
        # LinearQ4 / LinearQ8 store scales (and minimums) as fp16: a GGUF's Q4_0 / Q4_1 / Q8_0 d and m exactly,
        # K-quants' d * sc not
        rounded = [n for n, g in grids.items() if plan.edgekit_kernel and not g.exact_in_fp16()
                   and (g.bits == 4 or (g.default_zero and g.correction is None))]
        metadata["source_grids"] = {"kept": sorted({src for g in grids.values() for src in g.sources}),
                                    "float": float_weights, "scales_rounded_to_fp16": rounded}
    if kv.name == "int8":
        from edgekit_onnx.int8_kv import update_metadata

        update_metadata(metadata, cfg, spec.max_seq_len)
    artifact = Artifact(path=out, target="onnx", files=files, metadata=metadata)
    artifact.save()   # the standalone session reads artifact.json; export_api rewrites it with validation figures
    return artifact


def sliding_window_metadata(cfg: ModelConfig, max_seq_len: int) -> dict[str, Any]:
    """What the sliding layers hold here: GroupQueryAttention's shared past/present buffer has no ring, so every layer
    keeps max_seq_len rows and the window only masks (edgekit info's ring-sized cache is the eager graph's and
    ExecuTorch's, not this artifact's)."""
    layers = [i for i in range(cfg.num_layers) if cfg.is_sliding(i)]
    return {"layers": layers, "window": cfg.sliding_window, "cache_rows": max_seq_len,
            "masked_by": "GroupQueryAttention local_window_size"}


def source_grids(model: EdgeModel, plan: QuantPlan) -> tuple[dict, list[str]]:
    """Quant 'source': the checkpoint's own quantized linears as MatMulNBits grids (edgekit_onnx/source_grid.py)."""
    if plan.scheme != "source":
        return {}, []
    source = getattr(model, "source_quant", None) or {}
    if not source:
        raise UnsupportedOption(f"quant 'source' keeps a quantized checkpoint's own grids, and {str(model.source)!r} "
                                "was loaded from float weights (an HF folder or a float GGUF); use quant 'int4' (or "
                                "'fp32' / 'fp16')")
    from edgekit_onnx.source_grid import grids_for

    with progress.current().stage("quantize"):
        return grids_for(model.config, source)


def _kernel_library(out: Path) -> list[str]:
    """edgekit's ONNX Runtime kernel library, built (or taken from the build cache) and copied into the export folder,
    which then runs as it is; returns its folder-relative path."""
    import shutil

    from edgekit_onnx.kernels import KERNELS_DIR, build_library

    lib = build_library()
    (out / KERNELS_DIR).mkdir(parents=True, exist_ok=True)
    shutil.copy2(lib, out / KERNELS_DIR / lib.name)
    return [f"{KERNELS_DIR}/{lib.name}"]


def _metadata(model: EdgeModel, spec: TargetSpec, plan: QuantPlan, op_counts: dict[str, int], weight_bytes: int,
              external: bool) -> dict[str, Any]:
    import onnxruntime

    cfg = model.config
    return {
        "format": "onnx",
        "max_seq_len": spec.max_seq_len,            # also in the core's common metadata; the standalone
        "last_logits_only": spec.last_logits_only,  # session needs them before export_api adds that
        "quantization": plan.to_dict(),
        "ir_version": IR_VERSION,
        "opsets": {"ai.onnx": OPSET, "com.microsoft": MS_OPSET},
        "min_onnxruntime": min_ort_version(plan, cfg),
        "built_with_onnxruntime": onnxruntime.__version__,
        "external_data": external,
        "weight_bytes": weight_bytes,
        "op_counts": op_counts,
        "genai_config": "genai_config.json",
        "io": {"main": MODEL_FILE, "inputs": ["input_ids", "attention_mask"], "logits": "logits",
               "past_key": PAST_KEY, "past_value": PAST_VALUE, "present_key": PRESENT_KEY,
               "present_value": PRESENT_VALUE, "layers": cfg.num_layers, "kv_heads": cfg.num_kv_heads,
               "head_dim": cfg.head_dim, "cache_layout": "BNSH",
               "cache_dtype": "float16" if plan.float_dtype == "fp16" else "float32",
               "cache_shape": [1, cfg.num_kv_heads, spec.max_seq_len, cfg.head_dim],
               "past_present_share_buffer": True},
    }


# GroupQueryAttention's local_window_size counts the query itself only since onnxruntime#25927 (merged September
# 2025): 1.22.1 attends to one position more (measured: the tiny Gemma 3 0.5 logits off), 1.32 is exact. 1.24 is the
# first release surely holding that change (1.23's was not checked), so a sliding-window export asks for it.
SLIDING_WINDOW_MIN_ORT = "1.24"


def min_ort_version(plan: QuantPlan, cfg: ModelConfig | None = None) -> str:
    """The oldest ONNX Runtime whose CPU kernels cover what this graph uses: GroupQueryAttention with fused rotary and
    MatMulNBits accuracy_level 4 on CPU from 1.18; GatherBlockQuantized on uint8 data (either width) from 1.22 (1.20
    and 1.21 take only int4-typed data); edgekit's kernel library asks for API 18, i.e. 1.18, and its GatherQ4
    replaces GatherBlockQuantized for a 4-bit table. tests/onnx/test_oldest_onnxruntime.py runs both floors in those
    releases. A model with sliding layers needs SLIDING_WINDOW_MIN_ORT."""
    if cfg is not None and cfg.has_sliding_layers:
        return SLIDING_WINDOW_MIN_ORT
    if plan.embedding_bits == 8 or (plan.embedding_bits == 4 and not plan.tiled(4)):
        return "1.22"
    return "1.18"
