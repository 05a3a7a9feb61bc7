"""Neural Engine friendliness: what in an ML program will keep it (or parts of it) off the ANE.

Rules follow Apple's published guidance (coremltools docs "Flexible Input Shapes" and "Optimizing models / compression
performance", WWDC24 "Deploy machine learning and AI models on-device with Core ML", Apple's "On-Device Llama 3.1 with
Core ML" article) and widely reproduced limits (a dimension above 16384 does not map onto the ANE, which is why Apple
and ANEMLL split the LM head). The report cannot prove placement — Core ML decides at load time on the device
(Xcode's performance report / MLComputePlan shows it) — it lists what is known to block the ANE before an app exists.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgekit_coreml.quant import CoreMLQuant

ANE_MAX_DIM = 16384
# runtime-indexed / integer ops that the ANE does not execute: they run on the CPU and split the graph
CPU_BOUND_OPS = {"gather", "slice_update", "read_state", "coreml_update_state", "shape", "select", "equal",
                 "real_div", "minimum", "scatter", "mod"}   # scatter, mod: a sliding layer's ring (builder.py)


def _tensor_dims(var) -> list[Any]:
    try:
        return list(var.shape)
    except (AttributeError, TypeError):
        return []


def ane_report(prog, q: CoreMLQuant, function: str = "main") -> list[str]:
    """Findings, each 'rule: detail'; an empty list means nothing known blocks the ANE."""
    from coremltools.converters.mil.mil import types
    from coremltools.converters.mil.mil.types.symbolic import is_symbolic

    fn = prog.functions[function]
    findings: list[str] = []
    ranged = [n for n, v in fn.inputs.items() if not str(v.sym_type.__name__).startswith("state")
              and any(is_symbolic(d) for d in _tensor_dims(v))]
    if ranged:
        findings.append(f"dynamic-shape: inputs {', '.join(ranged)} have a flexible (range) length; the Neural Engine "
                        f"needs fixed or enumerated shapes, so Core ML runs this model on CPU/GPU. A multifunction "
                        f"model (static prefill chunk + T=1 decode) would be eligible")
    big = sorted({(o.op_type, d) for o in fn.operations for v in o.outputs for d in _tensor_dims(v)
                  if not is_symbolic(d) and int(d) > ANE_MAX_DIM})
    if big:
        dims = ", ".join(f"{t} ({d})" for t, d in big[:6])
        findings.append(f"dimension-limit: tensors with a dimension above {ANE_MAX_DIM}: {dims}; the ANE does not "
                        f"take them (split the vocabulary projection into chunks of <= {ANE_MAX_DIM})")
    if q.scheme == "source":
        findings.append("per-block-quantization: the checkpoint's own int4 / int8 blocks "
                        "(constexpr_blockwise_shift_scale, plus a per-group correction for grids with minimums) are "
                        "decompressed efficiently on the GPU; the Neural Engine prefers per-channel (quant 'w8' / 'w4' "
                        "-O granularity=per_channel re-quantize)")
    elif q.granularity == "per_block":
        findings.append(f"per-block-quantization: int{q.bits} weights with blocks of {q.block_size} "
                        f"(constexpr_blockwise_shift_scale) are decompressed efficiently on the GPU; for the Neural "
                        f"Engine use per-channel (-O granularity=per_channel)")
    states = [v for v in fn.inputs.values() if str(v.sym_type.__name__).startswith("state")]
    if states:
        total = sum(int(_prod(v.sym_type.wrapped_type().get_shape())) * 2 for v in states)
        findings.append(f"state: {len(states)} fp16 state tensors ({total / 2**20:.1f} MiB) written with "
                        f"slice_update at a runtime position{_ring_note(fn)}; Apple's stateful LLM examples "
                        f"(Mistral 7B, Llama 3.1) run on the GPU, and every layer's cache is read whole each step: check placement in Xcode's "
                        f"performance report before counting on the ANE")
    non_fp16 = sorted({f"{o.op_type}({types.builtin_to_string(v.dtype)})" for o in fn.operations
                       if o.op_type not in ("const",) and not o.op_type.startswith("constexpr_") for v in o.outputs
                       if types.is_tensor(v.sym_type) and v.dtype not in (types.fp16,) and o.op_type != "shape"})
    fp32 = [s for s in non_fp16 if "fp32" in s]
    if fp32:
        findings.append(f"dtype: fp32 compute ({', '.join(fp32[:8])}); the ANE computes in fp16 only")
    cpu_ops = sorted({o.op_type for o in fn.operations if o.op_type in CPU_BOUND_OPS})
    if cpu_ops:
        ints = [s for s in non_fp16 if "fp32" not in s]
        findings.append(f"cpu-ops: {', '.join(cpu_ops)} (index/shape arithmetic on integer tensors: "
                        f"{', '.join(ints[:6])}); the ANE computes fp16 only, so these run on the CPU and split the "
                        f"graph into several segments")
    return findings


def _ring_note(fn) -> str:
    return " (sliding layers: scatter into a ring of rows)" if any(o.op_type == "scatter" for o in fn.operations) else ""


def _prod(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
