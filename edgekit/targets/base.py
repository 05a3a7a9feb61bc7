"""The target plugin contract: what every backend package (targets/executorch, targets/coreml, targets/onnx) provides."""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from edgekit.errors import UnsupportedOption

# Session is defined with the runtime that drives it; plugins written against this module import it from here
from edgekit.runtime.session import Session

if TYPE_CHECKING:
    from torch import nn

    from edgekit.model.edge_model import EdgeModel

ARTIFACT_META = "artifact.json"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Capabilities:
    quant_schemes: tuple[str, ...]               # e.g. ("fp32", "w8", "8da4w")
    kv_cache: tuple[str, ...] = ("fp32",)        # cache dtypes this target can store
    dynamic_shapes: bool = True                  # one artifact for any prefill length
    per_op_profiling: bool = False
    host_runnable: bool = True                   # can a Session run it on this kind of host at all
    # the target-specific options TargetSpec.options accepts: edgekit.targets.options.Option (typed, with accepted
    # values, default and help) or, from a plugin written before them, bare names (untyped strings)
    options: tuple[Any, ...] = ()
    default_quant: str = "fp32"
    notes: str = ""
    # dtype export() loads a checkpoint path in: a torch dtype name, or "stored" (each tensor as the checkpoint stores
    # it, GGUF dequantized to fp32: a bf16 checkpoint is never widened to an fp32 copy)
    load_dtype: str = "float32"
    # options that keep a small (< 1B) model's answers close to fp32 with the default scheme, at some speed cost;
    # `edgekit demo` exports with them (its model is 135M parameters)
    quality_options: tuple[tuple[str, Any], ...] = ()
    # options that make the default scheme faster with the same answers, at a cost for the app (e.g. a kernel library
    # it must load); `edgekit demo` exports with them unless told --stock-kernels
    speed_options: tuple[tuple[str, Any], ...] = ()
    # the shared schemes (edgekit.quant.registry) this target holds, each as one of its own quant names with the
    # options that give it the scheme's meaning (edgekit.targets.schemes); a registered name listed in quant_schemes
    # without a binding here is held as that quant with no options
    scheme_bindings: tuple[Any, ...] = ()
    # the model features (ModelConfig.features) this target's graph builder implements; None: not declared (a plugin
    # written before the contract; it is trusted, with a log line)
    model_features: tuple[str, ...] | None = None
    # how each scheme's weights are stored (edgekit.plan.layout.StorageLayout), for `edgekit plan`'s estimates
    storage: tuple[Any, ...] = ()
    # what the runtime holds beside the weights and the KV cache once a model runs (edgekit.plan.layout
    # .RuntimeFigures; prepacked weight copies are the layouts' runtime_share), measured by benchmarks/bench_plan.py
    runtime_figures: Any = None


SOURCE_SCHEME = "source"   # keep a quantized checkpoint's own grids (a GGUF's blocks) as stored


def default_quant(caps: Capabilities, model: Any) -> str:
    """The scheme an export gets when none is asked for: a quantized checkpoint keeps its own grids wherever the
    target can hold them (re-quantizing costs quality nothing later wins back); otherwise the target's default."""
    if getattr(model, "source_quant", None) and SOURCE_SCHEME in caps.quant_schemes:
        return SOURCE_SCHEME
    return caps.default_quant


def scheme_options(caps: Capabilities, quant: str, options: dict[str, Any]) -> dict[str, Any]:
    """`options` without those the scheme fixes: under 'source' the file sets bits, groups and the embedding / output
    layers, so a target's quality options (which choose them) do not apply; speed options (whose kernel runs) do."""
    if quant != SOURCE_SCHEME:
        return dict(options)
    quality = {k for k, _ in caps.quality_options} - {k for k, _ in caps.speed_options}
    return {k: v for k, v in options.items() if k not in quality}


@dataclass(frozen=True)
class TargetSpec:
    quant: str = "fp32"
    max_seq_len: int = 512
    kv_cache: str = "fp32"
    last_logits_only: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def check_against(self, target: Target, model: EdgeModel) -> None:
        caps = target.capabilities
        if self.quant not in caps.quant_schemes:
            raise UnsupportedOption(f"quant scheme {self.quant!r} is not supported by target {target.name!r}; "
                                    f"supported: {', '.join(caps.quant_schemes)}")
        if self.kv_cache not in caps.kv_cache:
            why = f" ({caps.notes})" if caps.notes else ""
            raise UnsupportedOption(f"kv cache {self.kv_cache!r} is not supported by target {target.name!r}; "
                                    f"supported: {', '.join(caps.kv_cache)}{why}")
        limit = model.config.max_position_embeddings
        if not 2 <= self.max_seq_len <= limit:
            raise UnsupportedOption(f"max_seq_len {self.max_seq_len} is outside what the model supports: 2..{limit} "
                                    f"(its max_position_embeddings)")
        check_features(target, model)
        from edgekit.targets.options import coerce

        coerce(target.name, caps, self.options)   # unknown names and bad values, naming what is accepted


def check_features(target: Target, model: EdgeModel) -> None:
    """UnsupportedOption when the model needs a feature the target's builder does not implement, naming both."""
    declared = target.capabilities.model_features
    needed = model.config.features()
    if declared is None:
        log.info("target %s does not declare the model features it implements; %s needs %s", target.name,
                 model.name, ", ".join(sorted(needed)) or "none")
        return
    missing = sorted(needed - set(declared))
    if missing:
        raise UnsupportedOption(f"{model.name} needs {', '.join(missing)}, which target {target.name!r} does not "
                                f"implement (it implements: {', '.join(sorted(declared)) or 'none'}); export it to a "
                                "target that does")


@dataclass
class Artifact:
    """An exported model: a folder holding the target's files and artifact.json (metadata)."""

    path: Path                      # the folder
    target: str                     # canonical target name
    files: list[str]                # the artifact's own files, relative to path (e.g. ["model.pte"])
    metadata: dict[str, Any]        # quant, max_seq_len, io signature, model facts, validation figures ...

    @property
    def main_file(self) -> Path:
        return self.path / self.files[0]

    def save(self) -> None:
        doc = {"target": self.target, "files": self.files, "metadata": self.metadata}
        (self.path / ARTIFACT_META).write_text(json.dumps(doc, indent=2, default=_jsonable))

    @classmethod
    def load(cls, path: str | Path) -> Artifact:
        from edgekit.errors import BundleError

        path = Path(path)
        meta = path / ARTIFACT_META
        if not meta.exists():
            raise BundleError(f"{path} is not an edgekit artifact folder (no {ARTIFACT_META})")
        doc = json.loads(meta.read_text())
        return cls(path=path, target=doc["target"], files=doc["files"], metadata=doc["metadata"])


def _jsonable(o: Any) -> Any:
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class Target(Protocol):
    name: str
    aliases: tuple[str, ...]
    platform: str                   # "android" | "ios" | "linux"
    capabilities: Capabilities

    def export(self, model: EdgeModel, spec: TargetSpec, out: Path) -> Artifact:
        """Write the artifact's files into `out` (an empty temp folder the core renames on success)."""
        ...

    def reference(self, model: EdgeModel, spec: TargetSpec) -> nn.Module:
        """The eager graph the artifact must match (quantized like the artifact); for validation."""
        ...

    def tolerance(self, spec: TargetSpec) -> float:
        """Max |Δlogit| allowed between the artifact and reference()."""
        ...

    def session(self, artifact: Artifact, **options: Any) -> Session:
        """Run the artifact on this host; MissingDependency / UnsupportedOption where it can't."""
        ...

    def device_assets(self, artifact: Artifact) -> list[Path]:
        """Files a device needs beside the artifact (kernel libraries, sources)."""
        ...

    def standalone_session(self) -> Path | None:
        """A self-contained Python module (imports only the target's runtime + numpy + stdlib) defining
        `open_session(folder, threads=None, profile_dir=None)`, returning an object with `reset()`,
        `forward(tokens, input_pos) -> np.ndarray`, `max_seq_len`, `last_logits_only` and optionally
        `op_profile() -> list[dict]`. `folder` holds the artifact files and artifact.json or manifest.json.
        Device runners (ssh boards) and the host Session both use it; None where no such runner exists."""
        ...

    # Optional, so plugins written before it keep working: `device_runner() -> Runner | None`, a profiler runner
    # (edgekit.profiling.runner_protocol.Runner) tried before edgekit's own for this target's bundles on a device.
