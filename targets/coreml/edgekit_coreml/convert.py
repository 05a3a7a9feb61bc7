"""Export: MIL program built from the EdgeModel's weights (builder.py, quantized as it is built) -> ct.convert -> save.

Prefill and decode share ONE function with a flexible sequence length (ct.RangeDim 1..max_seq_len-1), not a
multifunction model: one predict() call for any T, one set of states, one program the Linux evaluator and the app
code drive the same way. The price is that a range-shaped input keeps the model off the Neural Engine (it needs
static or enumerated shapes) — the ANE report says so, and names multifunction (static prefill chunk + decode) as
the way there.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit import progress
from edgekit.errors import ExportError, UnsupportedOption
from edgekit.model.config import RING_REWIND
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


@contextlib.contextmanager
def sigint_held() -> Iterator[None]:
    """Hold Ctrl-C until the block ends, then raise it: coremltools' import runs bare `except:` blocks (probing
    optional dependencies) that would swallow a KeyboardInterrupt and let the export run on."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)
    if caught:
        raise KeyboardInterrupt


@contextlib.contextmanager
def pass_bars_off() -> Iterator[None]:
    """coremltools draws a tqdm bar per MIL pass pipeline on stderr, between edgekit's own progress lines; they show
    only when edgekit logs at debug level (`edgekit -vv`). tqdm reads TQDM_DISABLE once, when first imported (torch
    imports it before any command runs), so the pipeline's own tqdm is switched off for the conversion instead."""
    from coremltools.converters.mil.mil.passes import pass_pipeline

    if log.isEnabledFor(logging.DEBUG):
        yield
        return
    bar = pass_pipeline.tqdm
    pass_pipeline.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        pass_pipeline.tqdm = bar


def lower(model: EdgeModel, spec: TargetSpec, q: CoreMLQuant, ios: int, record: dict | None = None):
    """Build the MIL program from the EdgeModel's weights (edgekit_coreml.builder), then ct.convert it to an ML
    program. The builder's program is fp16 and already quantized, so conversion only runs coremltools' passes and
    serializes (the returned MLModel keeps the pymil program for the ANE report)."""
    with sigint_held():
        import coremltools as ct

    from edgekit_coreml.builder import build_program

    target = getattr(ct.target, f"iOS{ios}", None)
    if target is None:
        raise UnsupportedOption(f"min_ios {ios} is not known to coremltools {ct.__version__}; accepted: 18")
    stages = progress.current()
    with stages.stage("build"):
        prog = build_program(model, spec, q, record)
    seq = ct.RangeDim(lower_bound=1, upper_bound=spec.max_seq_len - 1, default=1)
    with stages.stage("lower"), pass_bars_off():
        return ct.convert(
            prog,
            inputs=[ct.TensorType(name=INPUTS[0], shape=(1, seq), dtype=np.int32),
                    ct.TensorType(name=INPUTS[1], shape=(seq,), dtype=np.int32)],
            outputs=[ct.TensorType(name=OUTPUT, dtype=np.float16)],
            minimum_deployment_target=target,
            compute_precision=ct.precision.FLOAT16,
            convert_to="mlprogram",
            skip_model_load=True,  # Core ML cannot load on Linux; the macOS Session loads it on use
        )


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
    if q.scheme == "source" and not getattr(model, "source_quant", None):
        from edgekit_coreml.source_grid import source_grids

        source_grids(model)   # raises: a float checkpoint has no grids of its own to keep
    stages = progress.current()
    t0 = time.perf_counter()
    record: dict[str, list[str]] = {}
    try:
        mlmodel = lower(model, spec, q, ios, record)
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
    extra = {"source_grids": record} if q.scheme == "source" else {}
    return {**extra, "format": "mlprogram", "file": MODEL_FILE, "min_ios": ios, "min_macos": 15,
            "shape_strategy": "flexible sequence length (ct.RangeDim 1..max_seq_len-1), one function for prefill "
                              "and decode; not multifunction",
            "kv_cache_storage": kv_cache_storage(model.config),
            "compute_precision": "fp16", "quant_detail": q.describe(), "io": io_signature(model, spec),
            "user_defined_metadata": user_meta, "ane_findings": findings,
            "export_seconds": round(time.perf_counter() - t0, 2)}


def kv_cache_storage(cfg) -> str:
    text = "fp16 Core ML states [1, Hkv, max_seq_len, D] per layer (k and v)"
    if cfg.has_sliding_layers:   # builder.ring_attention
        text += (f"; sliding layers: a ring of min(max_seq_len, {cfg.sliding_window} + {RING_REWIND}) rows "
                 "(window + rewind)")
    return text


def io_signature(model: EdgeModel, spec: TargetSpec) -> dict[str, Any]:
    cfg = model.config
    from edgekit_coreml.builder import cache_rows, state_name

    states = {state_name(i, kv): [1, cfg.num_kv_heads, cache_rows(cfg, i, spec.max_seq_len), cfg.head_dim]
              for i in range(cfg.num_layers) for kv in ("k", "v")}
    t = f"T<={spec.max_seq_len - 1}"
    return {"inputs": {"tokens": {"dtype": "int32", "shape": [1, t]}, "input_pos": {"dtype": "int32", "shape": [t]}},
            "outputs": {"logits": {"dtype": "fp16", "shape": [1, 1 if spec.last_logits_only else t,
                                                                cfg.vocab_size]}},
            "states": {"dtype": "fp16", "shapes": states}}
