"""The ExecuTorch target (alias "android"): the light module the `edgekit.targets` entry point names.

Nothing heavy is imported here; export, session and profiling load executorch / torchao on use.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import MissingDependency
from edgekit.targets.base import Artifact, Capabilities, TargetSpec
from edgekit.targets.options import Option
from edgekit.targets.schemes import SchemeBinding
from edgekit_executorch.storage import RUNTIME, STORAGE

if TYPE_CHECKING:
    from torch import nn

    from edgekit.model.edge_model import EdgeModel
    from edgekit_executorch.session import ExecuTorchSession

QUANT_SCHEMES = ("fp32", "8da8w", "8da4w", "source")
# the shared schemes (edgekit.quant.registry) and the options that give each its meaning here; 8da4w is groups of 32
# everywhere (optimum-executorch's recipe too), not this target's old largest-dividing group
SCHEME_BINDINGS = (SchemeBinding("fp32", "fp32"), SchemeBinding("8da8w", "8da8w"),
                   SchemeBinding("8da4w", "8da4w", (("group_size", 32),)), SchemeBinding("source", "source"))
OPTIONS = (
    Option("group_size", "int", (32, 64, 128), 32, "8da4w: input channels per int4 weight group"),
    Option("embedding_bits", "int", (4, 8), None, "the token embedding's bits (8da4w: 4 in groups of 32; fp32 / "
           "8da8w: float unless set)"),
    Option("output_bits", "int", (4, 8), None, "the output layer's bits (8: per channel; default: as the scheme)"),
    Option("custom_sdpa", "bool", None, True, "attention in ExecuTorch's llama ops (false: plain graph attention)"),
    Option("linear_kernel", "str", ("xnnpack", "edgekit"), None, "who runs the int4 linears (8da4w: xnnpack; "
           "source: edgekit, the only one with per-group minimums)"),
    Option("attention_kernel", "str", ("llama", "edgekit"), None, "fp32 cache: ExecuTorch's custom_sdpa or "
           "edgekit::attention (default edgekit with linear_kernel edgekit, else llama)"),
)
FP32_TOLERANCE = 1e-4
QUANT_TOLERANCE = 1e-2


def _require_executorch() -> None:
    try:
        import executorch  # noqa: F401
        import torchao  # noqa: F401
    except ImportError as e:
        raise MissingDependency(f"the executorch target needs executorch==1.5.1 and torchao ({e}); "
                                "pip install edgekit-target-executorch") from e


class ExecuTorchTarget:
    name = "executorch"
    aliases = ("android",)
    platform = "android"
    capabilities = Capabilities(
        quant_schemes=QUANT_SCHEMES,
        kv_cache=("fp32", "int8"),
        dynamic_shapes=True,
        per_op_profiling=True,
        host_runnable=True,
        options=OPTIONS,
        default_quant="8da4w",
        # what its builder implements: the PyTorch graph itself, so every feature edgekit.model.graph computes (the
        # RoPE tables come from rope_tables; a layer edgekit's fused kernels cannot compute stays unfused, a sliding
        # layer keeps its ring as plain ops)
        storage=STORAGE, runtime_figures=RUNTIME,
        model_features=("qk_norm", "attention_bias", "tied_embeddings", "rope_freq_factors", "rope_scaling_llama3",
                        "act_gelu_tanh", "embed_scale", "sandwich_norms", "query_scale", "sliding_window"),
        scheme_bindings=SCHEME_BINDINGS,
        # the 8da4w output layer at 8 bits: SmolLM2-135M's teacher-forced top-1 agreement with fp32 ~40 % -> ~53 %
        quality_options=(("output_bits", 8),),
        speed_options=(("linear_kernel", "edgekit"),),
        load_dtype="stored",  # a bf16 checkpoint path stays bf16: quantization reads it chunk by chunk (RSS)
        notes="options: group_size 32|64|128 (8da4w; default 32), embedding_bits 8|4 "
              "(8da4w default 4), output_bits 8|4, custom_sdpa true|false, linear_kernel xnnpack|edgekit (8da4w: "
              "edgekit runs the int4 linears in edgekit's own kernel, faster, but the .pte then needs edgekit's kernel "
              "library in the app: custom_op_libraries), attention_kernel llama|edgekit (fp32 cache: ExecuTorch's "
              "custom_sdpa or edgekit::attention; default edgekit with linear_kernel edgekit, else llama); "
              "kv_cache int8: int8 K/V with one fp32 scale per (position, kv head), run by edgekit's own kernel "
              "library (edgekit::attention / update_int8_cache, loaded from custom_op_libraries); "
              "quant source (a quantized GGUF): its 4-bit grids as stored in edgekit's int4 kernel, activations "
              "int8 per group, its Q8_0 / Q4_0 table as stored, a head that is not 4-bit re-quantized to int8 per "
              "channel (artifact metadata source_grids); the file fixes group_size / embedding_bits / output_bits",
    )

    def export(self, model: EdgeModel, spec: TargetSpec, out: Path) -> Artifact:
        """Writes out/model.pte (XNNPACK-delegated, quantized per spec) and returns its Artifact."""
        _require_executorch()
        from edgekit_executorch.attention import resolve_attention
        from edgekit_executorch.export import PTE_NAME, export_pte
        from edgekit_executorch.quantize import linear_in_features, plan

        # bad options fail before any heavy work
        qp = plan(spec.quant, spec.options, linear_in_features(model.config))
        resolve_attention(spec.options, spec.kv_cache, qp.linear_kernel)
        if qp.scheme == "source":
            from edgekit_executorch.source_q4 import require_source

            require_source(model)
        metadata = export_pte(model, spec, Path(out))
        metadata.update(runtime="executorch", runtime_version=_executorch_version(), backend="xnnpack",
                        io={"inputs": {"tokens": "int64[1,T]", "input_pos": "int64[T]"},
                            "outputs": {"logits": "float32[1,1,V]" if spec.last_logits_only else "float32[1,T,V]"},
                            "dynamic_dim": f"T in 1..{spec.max_seq_len - 1}", "method": "forward"})
        files = [PTE_NAME, *metadata["custom_op_libraries"]]   # the kernels travel (and are hashed) with the .pte
        return Artifact(path=Path(out), target=self.name, files=files, metadata=metadata)

    def reference(self, model: EdgeModel, spec: TargetSpec) -> nn.Module:
        """The same quantized decoder, run eagerly with edgekit's own attention."""
        _require_executorch()
        from edgekit_executorch.export import build_decoder

        return build_decoder(model, spec, for_export=False)

    def tolerance(self, spec: TargetSpec) -> float:
        exact = spec.quant == "fp32" and spec.kv_cache == "fp32" and not (
            spec.options.get("embedding_bits") or spec.options.get("output_bits"))
        return FP32_TOLERANCE if exact else QUANT_TOLERANCE

    def session(self, artifact: Artifact, **options: Any) -> ExecuTorchSession:
        """options: threads (int), profile_dir (path: record ETDumps for op_profile())."""
        _require_executorch()
        from edgekit_executorch.session import ExecuTorchSession

        return ExecuTorchSession(artifact, **options)

    def device_assets(self, artifact: Artifact) -> list[Path]:
        """edgekit's kernel library, when the .pte needs it: one of the artifact's own files (kernels/), so a bundle
        lists it (manifest `kernels`) where it already is. An older export named the exporter's build cache
        instead, which no other machine has: refused."""
        libs = artifact.metadata.get("custom_op_libraries", [])
        outside = [p for p in libs if p not in artifact.files]
        if outside:
            from edgekit.errors import RefusedFileError

            raise RefusedFileError(f"the artifact at {artifact.path} names kernel libraries outside its files: "
                                   f"{', '.join(outside)}; only libraries inside the artifact folder are shipped "
                                   "and loaded: export it again with this edgekit")
        return [artifact.path / p for p in libs]

    def standalone_session(self) -> Path:
        return Path(__file__).with_name("standalone_session.py")


def _executorch_version() -> str:
    from importlib.metadata import version

    return version("executorch")
