"""Export: decoder copy with state caches -> torch.export -> ct.convert (iOS 18 ML program) -> weight quantization.

Prefill and decode share ONE function with a flexible sequence length (ct.RangeDim 1..max_seq_len-1), not a
multifunction model: one predict() call for any T, one set of states, one program the Linux evaluator and the app
code drive the same way. The price is that a range-shaped input keeps the model off the Neural Engine (it needs
static or enumerated shapes) — the ANE report says so, and names multifunction (static prefill chunk + decode) as
the way there.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from edgekit import progress
from edgekit.errors import ExportError, UnsupportedOption
from edgekit_coreml.attend import use_scaled_norms, use_state_cache
from edgekit_coreml.quant import CoreMLQuant, quant_for

if TYPE_CHECKING:
    from edgekit.model.edge_model import EdgeModel
    from edgekit.targets.base import TargetSpec

log = logging.getLogger(__name__)
MODEL_FILE = "model.mlpackage"
MIN_IOS = 18
INPUTS = ("tokens", "input_pos")
OUTPUT = "logits"


def check_min_ios(options: dict[str, Any]) -> int:
    value = options.get("min_ios", MIN_IOS)
    try:
        ios = int(value)
    except (TypeError, ValueError):
        raise UnsupportedOption(f"min_ios {value!r} is not a number; accepted: 18 or later") from None
    if ios < MIN_IOS:
        raise UnsupportedOption(
            f"min_ios {ios} is below iOS 18: the model keeps its KV cache in Core ML states (ct.StateType), which "
            f"exist from iOS 18 / macOS 15 on; accepted: min_ios >= 18 (older OSes would need the cache passed as "
            f"model inputs/outputs on every call, which this target does not build)")
    return ios


def capture(model: EdgeModel, spec: TargetSpec) -> torch.export.ExportedProgram:
    """torch.export of a decoder copy whose attention writes fp16 state caches; dynamic T in 1..max_seq_len-1."""
    # fp32 decoder: coremltools casts to fp16 itself (an fp16 torch graph makes it type the state reads fp32 and
    # reject the fused attention: "key has dtype fp32 whereas query has dtype fp16")
    decoder = use_state_cache(model.decoder(spec.max_seq_len, spec.last_logits_only, torch.float32))
    use_scaled_norms(decoder)  # fp16-safe RMSNorm: x² overflows fp16 for |x| > 256
    seq = torch.export.Dim("T", min=1, max=spec.max_seq_len - 1)
    example = (torch.zeros(1, 2, dtype=torch.int64), torch.arange(2, dtype=torch.int64))
    with torch.no_grad():
        ep = torch.export.export(decoder, example, dynamic_shapes=({1: seq}, {0: seq}), strict=False)
        return ep.run_decompositions({})  # in-place cache writes -> functional slice_scatter for coremltools


def lower(ep: torch.export.ExportedProgram, spec: TargetSpec, ios: int):
    import coremltools as ct

    seq = ct.RangeDim(lower_bound=1, upper_bound=spec.max_seq_len - 1, default=1)
    target = getattr(ct.target, f"iOS{ios}", None)
    if target is None:
        raise UnsupportedOption(f"min_ios {ios} is not known to coremltools {ct.__version__}; accepted: 18")
    return ct.convert(
        ep,
        inputs=[ct.TensorType(name=INPUTS[0], shape=(1, seq), dtype=np.int32),
                ct.TensorType(name=INPUTS[1], shape=(seq,), dtype=np.int32)],
        outputs=[ct.TensorType(name=OUTPUT, dtype=np.float16)],
        minimum_deployment_target=target,
        compute_precision=ct.precision.FLOAT16,
        convert_to="mlprogram",
        skip_model_load=True,  # Core ML cannot load on Linux; the macOS Session loads it on use
    )


def weight_consts(mlmodel) -> list[str]:
    """Names of the const ops holding decoder parameters (2-D weights); buffers (rope tables, mask) stay fp16."""
    prog = mlmodel._mil_program
    names = []
    for op in prog.functions["main"].operations:
        if op.op_type == "const" and op.name.startswith("p_") and "norm" not in op.name:
            val = op.outputs[0].val
            if isinstance(val, np.ndarray) and val.ndim == 2:
                names.append(op.name)
    return names


def quantize(mlmodel, q: CoreMLQuant):
    """linear_quantize_weights on the converted pymil program in place, then one serialization with an EMPTY main
    pipeline: what cto.coreml.linear_quantize_weights does, minus its proto round trip and second full pipeline."""
    import coremltools as ct
    import coremltools.optimize.coreml as cto
    from coremltools.converters.mil.converter import mil_convert
    from coremltools.optimize.coreml._quantization_passes import linear_quantize_weights

    if q.bits is None:
        return mlmodel
    cfg = cto.OpLinearQuantizerConfig(mode=q.mode, dtype=f"int{q.bits}", granularity="per_block",
                                      block_size=q.block_sizes, weight_threshold=0)
    names = weight_consts(mlmodel)
    prog = mlmodel._mil_program
    for fn in prog.functions.values():  # the new constexpr ops carry no torch stack trace; don't require one
        fn._essential_scope_sources = []
    linear_quantize_weights(config=cto.OptimizationConfig(op_name_configs={n: cfg for n in names})).apply(prog)
    spec = mlmodel.get_spec()
    return mil_convert(prog, convert_from="milinternal", convert_to="mlprogram", compute_units=mlmodel.compute_unit,
                       specification_version=spec.specificationVersion, model_description=spec.description,
                       skip_model_load=True, pass_pipeline=ct.PassPipeline.EMPTY)


def describe(mlmodel, model: EdgeModel, spec: TargetSpec, q: CoreMLQuant, ios: int) -> dict[str, str]:
    import edgekit

    meta = {
        "edgekit.version": edgekit.__version__, "edgekit.model": model.name, "edgekit.family": model.config.family,
        "edgekit.vocab_size": str(model.config.vocab_size), "edgekit.max_seq_len": str(spec.max_seq_len),
        "edgekit.eos_ids": ",".join(str(i) for i in model.stop_ids),
        "edgekit.bos_id": "" if model.config.bos_token_id is None else str(model.config.bos_token_id),
        "edgekit.quant": q.scheme, "edgekit.quant_detail": repr(q.describe()), "edgekit.kv_cache": "fp16 states",
        "edgekit.last_logits_only": str(spec.last_logits_only).lower(), "edgekit.min_ios": str(ios),
    }
    mlmodel.user_defined_metadata.update(meta)
    mlmodel.short_description = f"{model.name} ({model.config.family}) decoder, edgekit {edgekit.__version__}"
    mlmodel.input_description[INPUTS[0]] = "token ids int32 [1, T], 1 <= T < max_seq_len"
    mlmodel.input_description[INPUTS[1]] = "positions int32 [T], consecutive, starting where the cache ends"
    mlmodel.output_description[OUTPUT] = ("logits fp16 [1, 1, vocab] (last position)" if spec.last_logits_only
                                          else "logits fp16 [1, T, vocab]")
    return meta


def export_coreml(model: EdgeModel, spec: TargetSpec, out: Path) -> dict[str, Any]:
    """Write out/model.mlpackage; returns the artifact metadata."""
    ios = check_min_ios(spec.options)
    q = quant_for(spec.quant, spec.options)
    stages = progress.current()
    t0 = time.perf_counter()
    try:
        with stages.stage("capture"):
            ep = capture(model, spec)
        with stages.stage("lower"):
            mlmodel = lower(ep, spec, ios)
            del ep
        with stages.stage("quantize"):
            mlmodel = quantize(mlmodel, q)
    except UnsupportedOption:
        raise
    except Exception as e:  # a conversion failure names the stage and the cause
        raise ExportError(f"Core ML conversion of {model.name} failed: {type(e).__name__}: {e}") from e
    user_meta = describe(mlmodel, model, spec, q, ios)
    with stages.stage("serialize"):
        mlmodel.save(str(out / MODEL_FILE))
    from edgekit_coreml.ane import ane_report

    findings = ane_report(mlmodel._mil_program, q)
    for f in findings:
        log.warning("Neural Engine: %s", f)
    return {"format": "mlprogram", "file": MODEL_FILE, "min_ios": ios, "min_macos": 15,
            "shape_strategy": "flexible sequence length (ct.RangeDim 1..max_seq_len-1), one function for prefill "
                              "and decode; not multifunction",
            "kv_cache_storage": "fp16 Core ML states [1, Hkv, max_seq_len, D] per layer (k and v)",
            "compute_precision": "fp16", "quant_detail": q.describe(), "io": io_signature(model, spec),
            "user_defined_metadata": user_meta, "ane_findings": findings,
            "export_seconds": round(time.perf_counter() - t0, 2)}


def io_signature(model: EdgeModel, spec: TargetSpec) -> dict[str, Any]:
    cfg = model.config
    states = {f"layers_{i}_attention_attend_{kv}_cache": [1, cfg.num_kv_heads, spec.max_seq_len, cfg.head_dim]
              for i in range(cfg.num_layers) for kv in ("k", "v")}
    t = f"T<={spec.max_seq_len - 1}"
    return {"inputs": {"tokens": {"dtype": "int32", "shape": [1, t]}, "input_pos": {"dtype": "int32", "shape": [t]}},
            "outputs": {"logits": {"dtype": "fp16", "shape": [1, 1 if spec.last_logits_only else t,
                                                                cfg.vocab_size]}},
            "states": {"dtype": "fp16", "shapes": states}}
