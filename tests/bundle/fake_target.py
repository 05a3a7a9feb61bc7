"""A test-only target ("faketarget", alias "fake") that stores the decoder's weights as safetensors and runs them
eagerly. It exercises the bundle code against the Target contract without a real backend, quickly.

`install()` registers it (plus whichever real plugins load) by replacing the registry's table; a subprocess does the
same through `python tests/bundle/edgekit_with_fake.py ...`.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

from edgekit.targets.base import Artifact, Capabilities, TargetSpec

HERE = Path(__file__).parent
KERNEL_SOURCE = HERE / "fake_kernel.cpp"
STANDALONE = HERE / "fake_standalone.py"


class FakeTarget:
    name = "faketarget"
    aliases = ("fake",)
    platform = "linux"
    runtime = "fake-runtime"
    runtime_version = "0.0"
    min_os = "Linux (any)"
    capabilities = Capabilities(quant_schemes=("fp32",), options=("slow_export",), default_quant="fp32")

    def export(self, model, spec: TargetSpec, out: Path) -> Artifact:
        from safetensors.torch import save_file

        out = Path(out)
        save_file({k: v.contiguous() for k, v in model.weights.items()}, str(out / "weights.safetensors"))
        if spec.options.get("slow_export"):  # for the kill test: a marker, then a long stage
            Path(os.environ["FAKE_EXPORT_MARKER"]).write_text(str(out))
            time.sleep(float(spec.options["slow_export"]))
        (out / "config.json").write_text(json.dumps(asdict(model.config)))
        return Artifact(path=out, target=self.name, files=["weights.safetensors", "config.json"],
                        metadata={"custom_op_libraries": ["kernels/fake_kernel.cpp"],
                                  "io": {"inputs": {"tokens": "int64[1,T]", "input_pos": "int64[T]"},
                                         "outputs": {"logits": "float32[1,T,V]"}}})

    def reference(self, model, spec: TargetSpec):
        return model.decoder(spec.max_seq_len, spec.last_logits_only)

    def tolerance(self, spec: TargetSpec) -> float:
        return 1e-4

    def session(self, artifact: Artifact, **options):
        import torch
        from safetensors.torch import load_file

        from edgekit.model.config import ModelConfig, RopeScaling
        from edgekit.model.graph import build_decoder
        from edgekit.runtime.session import EagerSession

        load_libraries(artifact)
        raw = json.loads((artifact.path / "config.json").read_text())
        raw["rope_scaling"] = RopeScaling(**raw["rope_scaling"]) if raw.get("rope_scaling") else None
        raw["eos_token_ids"] = tuple(raw["eos_token_ids"])
        weights = load_file(str(artifact.path / "weights.safetensors"))
        md = artifact.metadata
        return EagerSession(build_decoder(ModelConfig(**raw), weights, md["max_seq_len"], torch.float32,
                                          md["last_logits_only"]))

    def device_assets(self, artifact: Artifact) -> list[Path]:
        return [KERNEL_SOURCE]

    def standalone_session(self) -> Path:
        return STANDALONE


def load_libraries(artifact: Artifact) -> None:
    """What real targets do with custom_op_libraries: dlopen each native library (relative to the folder, or
    absolute) into the process. Sources (.cpp) are for device builds only."""
    import ctypes

    for lib in artifact.metadata.get("custom_op_libraries", []):
        if str(lib).endswith(".so"):
            ctypes.CDLL(str(artifact.path / lib))


class FakePhoneTarget(FakeTarget):
    """The same, claiming to be for phones (so a bundle gets the Android README and multi-target runs have two)."""

    name = "fakephone"
    aliases = ()
    platform = "android"


def install() -> None:
    """Make get_target() see FakeTarget beside every real plugin that loads."""
    from importlib.metadata import entry_points

    from edgekit.targets import registry

    found = {}
    for ep in entry_points(group=registry.GROUP):
        try:
            obj = ep.load()
            t = obj() if isinstance(obj, type) else obj
            found[t.name] = t
        except Exception as e:  # noqa: BLE001 - a plugin under construction elsewhere must not break these tests
            logging.getLogger(__name__).warning("target plugin %s does not load: %s", ep.name, e)
    found["faketarget"] = FakeTarget()
    found["fakephone"] = FakePhoneTarget()
    registry._installed = lambda: found
