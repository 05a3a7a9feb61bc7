"""edgekit target "onnx" (alias "iot"): ONNX for ONNX Runtime on Linux boards, also runnable by onnxruntime-genai.

This module stays light (it is what the entry point loads): onnx / onnxruntime / torch are imported inside methods.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.targets.base import Artifact, Capabilities, TargetSpec
from edgekit.targets.options import Option
from edgekit.targets.schemes import SchemeBinding
from edgekit_onnx.storage import RUNTIME, STORAGE

if TYPE_CHECKING:
    from torch import nn

    from edgekit.model.edge_model import EdgeModel
    from edgekit.runtime.session import Session

__all__ = ["OnnxTarget"]

# |Δlogit| allowed against reference(): fp32 is the eager fp32 graph. int4 is the eager graph carrying the artifact's
# own dequantized weights (exact) and, at accuracy_level 4, MatMulNBits' int8 rounding of activations (per block,
# max|a|/127, emulated exactly: 2e-7 on the tiny models). That rounding is chaotic on real weights: a summation-order
# difference upstream flips a rounding, so on SmolLM2 (logits up to ~25) the artifact sits 0.4-0.7 from the emulated
# reference (and 0.8 from a non-emulated one; int4-vs-fp32 is ~14). Hence 1.0 at level 4, 1e-3 with fp32 activations.
# the shared schemes (edgekit.quant.registry) as this target's int4 (MatMulNBits) with the options that give each its
# meaning: accuracy level 1 = float activations, 4 = int8 per block; quantizer_output puts the output layer (and a tied
# table, which shares its codes) on the scheme's searched grid too. "int4" (block 128, int8 activations) stays ONNX's own.
def _w4(block: int, quantizer: str, level: int = 1) -> tuple[tuple[str, Any], ...]:
    head = (("quantizer_output", True),) if quantizer != "rtn" else ()
    return (("block_size", block), ("accuracy_level", level), ("quantizer", quantizer), ("embedding_bits", 4),
            ("output_bits", 4), ("linear_kernel", "mlas"), *head)


SCHEME_BINDINGS = (SchemeBinding("fp32", "fp32"), SchemeBinding("fp16", "fp16"), SchemeBinding("source", "source"),
                   SchemeBinding("w4", "int4", _w4(32, "rtn")),
                   *(SchemeBinding(f"w4_g{g}", "int4", _w4(g, "search")) for g in (32, 64, 128)),
                   SchemeBinding("w4_g128_rtn", "int4", _w4(128, "rtn")),
                   SchemeBinding("8da4w_g32a", "int4", _w4(32, "search", level=4)))

OPTIONS = (
    Option("block_size", "int", (32, 64, 128), 128, "int4: weights per MatMulNBits block (edgekit's kernel: the "
           "largest dividing every linear unless set)"),
    Option("accuracy_level", "int", (0, 1, 4), 4, "MatMulNBits: 0 unset (fp32), 1 fp32 activations, 4 int8 "
           "activations per block"),
    Option("embedding_bits", "int", (4, 8), None, "the token table's bits (int4: 4; fp32: float unless set)"),
    Option("output_bits", "int", (4, 8), None, "the output layer's bits (int4: 4; fp32: float unless set)"),
    Option("external_data", "str", ("auto", "always"), "auto", "weights in model.onnx.data: beyond protobuf's 2 GB "
           "limit, or always"),
    Option("threads", "int", None, None, "ONNX Runtime intra-op threads (genai_config.json; default: the runtime's)"),
    Option("linear_kernel", "str", ("mlas", "edgekit"), "mlas", "who runs the int4 linears: MatMulNBits, or "
           "edgekit's LinearQ4 (faster; its library ships in the export)"),
    Option("quantizer", "str", ("rtn", "search", "gptq"), "rtn", "int4: who picks the codes: ORT's "
           "round-to-nearest, edgekit's per-group scale search, or GPTQ on calibration text"),
    Option("calibration", "path", None, None, "gptq: a UTF-8 text file (default: the text shipped with edgekit)"),
    Option("quantizer_output", "bool", None, False, "the 4-bit output layer by the quantizer too"),
)

TOLERANCES = {"fp32": 1e-4, "int4": 1e-3, "int4-int8-activations": 1.0, "fp16": 5e-2}


class OnnxTarget:
    name = "onnx"
    aliases = ("iot",)
    platform = "linux"
    capabilities = Capabilities(
        quant_schemes=("fp32", "fp16", "int4", "source"),
        kv_cache=("fp32", "int8"),
        dynamic_shapes=True,
        per_op_profiling=True,
        host_runnable=True,
        options=OPTIONS,
        # int4 block 128 garbles SmolLM2-135M's answers even with an 8-bit output layer ("Le Grand Jardin, it's the
        # capital of France."); block 32 + 8-bit output answers "The capital of France is Paris, ..." (block 32 is also
        # the better block on teacher-forced top-1: 60 % vs 53 % for block 128)
        quality_options=(("output_bits", 8), ("block_size", 32)),
        speed_options=(("linear_kernel", "edgekit"),),
        default_quant="int4",
        # what its builder implements (the RoPE tables, scaled or not, come from edgekit.model.graph.rope_tables);
        # Gemma 3's too, whose sliding layers keep a float cache under kv_cache int8 (int8_kv.py)
        storage=STORAGE, runtime_figures=RUNTIME,
        model_features=("qk_norm", "attention_bias", "tied_embeddings", "rope_freq_factors", "rope_scaling_llama3",
                        "act_gelu_tanh", "embed_scale", "sandwich_norms", "query_scale", "sliding_window"),
        scheme_bindings=SCHEME_BINDINGS,
        notes="KV cache in the activation dtype (fp32, or fp16 for quant fp16); kv_cache int8 (quant fp32 or int4): "
              "int8 K/V + fp32 scale per (position, kv head) in plain ONNX ops, no genai_config.json; linear_kernel "
              "mlas|edgekit (int4: edgekit runs the int4 linears and a 4-bit embedding in edgekit's kernel library, "
              "faster, shipped inside the export folder and named in genai_config.json); quantizer rtn|search|gptq (int4: "
              "ORT's round-to-nearest, edgekit's per-group scale search, or GPTQ on calibration text, "
              "calibration=FILE or the shipped text)",
    )

    def export(self, model: EdgeModel, spec: TargetSpec, out: Path) -> Artifact:
        from edgekit_onnx.export import export_onnx

        return export_onnx(model, spec, Path(out))

    def reference(self, model: EdgeModel, spec: TargetSpec) -> nn.Module:
        from edgekit_onnx.quant import linear_in_features, plan_for
        from edgekit_onnx.reference import build_reference

        return build_reference(model, spec, plan_for(spec.quant, spec.options, linear_in_features(model.config)))

    def tolerance(self, spec: TargetSpec) -> float:
        int8_activations = int(spec.options.get("accuracy_level", 4)) == 4 or spec.options.get("linear_kernel") == "edgekit"
        if spec.quant in ("int4", "source") and int8_activations:
            return TOLERANCES["int4-int8-activations"]
        if spec.quant == "source":
            return TOLERANCES["int4"]
        return TOLERANCES[spec.quant]

    def session(self, artifact: Artifact, **options: Any) -> Session:
        from edgekit.errors import MissingDependency, RefusedFileError, UnsupportedOption

        unknown = sorted(set(options) - {"threads", "profile_dir"})
        if unknown:
            raise UnsupportedOption(f"session option(s) {', '.join(unknown)} are not known; known: threads, profile_dir")
        try:
            from edgekit_onnx.standalone_session import open_session
        except ImportError as e:  # pragma: no cover - onnxruntime is a declared dependency
            raise MissingDependency(f"the onnx target needs onnxruntime: pip install onnxruntime ({e})") from e
        from edgekit_onnx import standalone_session

        threads = options.get("threads", artifact.metadata.get("options", {}).get("threads"))
        try:
            return open_session(artifact.path, threads=threads, profile_dir=options.get("profile_dir"))
        except standalone_session.RefusedFileError as e:
            raise RefusedFileError(f"{artifact.path}: {e}") from e
        except standalone_session.RuntimeTooOldError as e:
            raise MissingDependency(f"{artifact.path}: {e}") from e

    def device_assets(self, artifact: Artifact) -> list[Path]:
        # ORT's contrib ops ship inside onnxruntime itself; edgekit's kernel library (linear_kernel 'edgekit') is one
        # of the artifact's own files (kernels/), so nothing else goes beside the model
        return []

    def standalone_session(self) -> Path | None:
        return Path(__file__).with_name("standalone_session.py")
