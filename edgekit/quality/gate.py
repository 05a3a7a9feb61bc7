"""The export gate: an export whose KL on the shipped text exceeds its scheme's bound fails (QualityError).

The bound depends only on the scheme, never on the reference's noise floor or on the artifact's own tolerance, so a
noisy reference cannot loosen it. Two limits, both must hold:
- `kl`: mean KL(fp32 || artifact) per token, nats. Set from SmolLM2-135M on the shipped text (docs/quality.md): every
  scheme the targets ship today passes it with room, and a broken artifact (weights scrambled, a layer dropped) does
  not come near it.
- `relative`: mean KL as a share of the reference's mean KL from the uniform distribution (how much the reference
  knows). Tiny random models are near-uniform, so their KL stays far below `kl` however broken the artifact is; the
  ratio is scale-free and catches them: a faithful quantization moves a small share of what the model knows, a broken
  artifact most or all of it.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from edgekit.errors import QualityError
from edgekit.quality.report import QualityReport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Bound:
    kind: str          # the scheme class
    kl: float          # max mean KL per token (nats)
    relative: float    # max mean KL / mean KL(reference || uniform)


# scheme class -> bound; see docs/quality.md for the measurements behind each number
BOUNDS: dict[str, Bound] = {
    "float32": Bound("float32", kl=1e-4, relative=1e-4),
    "float16": Bound("float16", kl=1e-2, relative=2e-3),
    "8-bit": Bound("8-bit", kl=0.05, relative=0.01),
    # the file's own grid against the fp32 graph of the same file: only activation rounding separates them
    # (SmolLM2 Q4_1 on ONNX with int8 activations per 32: KL 0.004, relative 5e-4; tiny models 5e-5)
    "source": Bound("source", kl=0.05, relative=0.005),
    "4-bit": Bound("4-bit", kl=1.0, relative=0.12),
    "below 4-bit": Bound("below 4-bit", kl=2.0, relative=0.25),
}
# schemes the targets name today; other names are classed by the weight bits their name carries
SCHEME_CLASS = {"fp32": "float32", "fp16": "float16", "bf16": "float16", "w8": "8-bit", "8da8w": "8-bit", "int8": "8-bit",
                "w4": "4-bit", "int4": "4-bit", "8da4w": "4-bit", "source": "source"}


def scheme_class(scheme: str) -> str:
    """The class of a scheme name: the table above, else the weight bits in its name (w4g32, q4_1, 8da4w, int3 ...)."""
    s = scheme.lower()
    if s in SCHEME_CLASS:
        return SCHEME_CLASS[s]
    if re.fullmatch(r"(fp|f|float)32", s):
        return "float32"
    if re.fullmatch(r"(fp|f|bf|float)16", s):
        return "float16"
    m = re.search(r"(\d+)w(?![a-z])", s) or re.search(r"(?:w|int|q|nf|uint)(\d+)", s)
    if m:
        bits = int(m.group(1))
        return "8-bit" if bits >= 8 else "4-bit" if bits >= 4 else "below 4-bit"
    log.warning("quant scheme %r names no weight bits; the quality gate uses the loosest bound (%s)", scheme,
                "below 4-bit")
    return "below 4-bit"


def bound_for(scheme: str) -> Bound:
    return BOUNDS[scheme_class(scheme)]


def check(report: QualityReport, scheme: str, kv_cache: str = "fp32") -> dict[str, object]:
    """The gate's verdict (recorded in report.gate); QualityError naming the figure and the bound when it fails.
    An int8 KV cache rounds every cached key and value, so its export is held to the 8-bit bound at tightest (SmolLM2
    fp32 weights + int8 cache: KL 2e-4, beyond fp32's 1e-4 and far inside 8-bit's 0.05)."""
    b = bound_for(scheme)
    if kv_cache == "int8":
        b8 = BOUNDS["8-bit"]
        if b.kl < b8.kl or b.relative < b8.relative:
            b = Bound(f"{b.kind} with an int8 KV cache", kl=max(b.kl, b8.kl), relative=max(b.relative, b8.relative))
    verdict = {"scheme_class": b.kind, "max_kl": b.kl, "max_relative_kl": b.relative,
               "passed": report.mean_kl <= b.kl and report.relative_kl <= b.relative}
    report.gate = verdict
    if not verdict["passed"]:
        which = (f"mean KL {report.mean_kl:.4g} > {b.kl:g}" if report.mean_kl > b.kl else
                 f"relative KL {report.relative_kl:.3g} > {b.relative:g} (mean KL {report.mean_kl:.3g} of the "
                 f"reference's {report.reference_information:.3g} from uniform)")
        raise QualityError(f"the {report.target} artifact ({scheme}, a {b.kind} scheme) is not faithful to the "
                           f"unquantized model on {report.text_id}: {which}; same top token {report.same_top:.1%}, "
                           f"perplexity {report.perplexity:.2f} vs {report.reference_perplexity:.2f}. The bounds per "
                           "scheme are in docs/quality.md; export with evaluate=False (--no-eval) to skip the gate")
    return verdict
