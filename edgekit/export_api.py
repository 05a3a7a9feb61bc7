"""edgekit.export(): spec checks, atomic output, timed stages, validation in the target's own runtime."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from edgekit import progress
from edgekit.bundle.artifact_files import FILE_HASHES, artifact_file_hashes
from edgekit.bundle.staging import clean_stale
from edgekit.errors import OutputPathError, ParityError
from edgekit.hashing import file_sha256
from edgekit.model.edge_model import EdgeModel
from edgekit.targets.base import Artifact, TargetSpec
from edgekit.targets.registry import get_target

log = logging.getLogger(__name__)


def check_output_path(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise OutputPathError(f"{out} already exists; choose another path or pass force=True (--force) to replace it")
    parent = out.parent if out.parent != Path("") else Path(".")
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK) or not _can_create_in(probe):
        raise OutputPathError(f"cannot write to {parent}: {probe} is not writable; choose a writable output folder")


def _can_create_in(folder: Path) -> bool:
    """os.access says yes to root everywhere; a real probe file catches read-only and pseudo file systems too."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def model_facts(model: EdgeModel) -> dict[str, Any]:
    cfg = model.config
    return {"name": model.name, "family": cfg.family, "architecture": cfg.architecture,
            "parameters": cfg.num_parameters, "layers": cfg.num_layers, "vocab_size": cfg.vocab_size,
            "source": str(model.source), "source_format": model.source_format, "source_quant": model.source_quant,
            "source_sha256": file_sha256(model.source) if model.source.is_file() else None}


def export(model: EdgeModel | str | Path, target: str, *, quant: str | None = None, max_seq_len: int | None = None,
           kv_cache: str = "fp32", last_logits_only: bool = False, out: str | Path | None = None,
           validate: bool = True, keep_failed: bool = False, force: bool = False, show_progress: bool | None = None,
           **options: Any) -> Artifact:
    """Export `model` for `target` into the folder `out`; validated against the PyTorch reference unless validate=False.

    Nothing half-written is left at `out`: the files are written into a temp folder beside it and renamed on success.
    A ParityError leaves nothing behind unless keep_failed=True (then the files stay at `<out>.failed`).
    """
    from edgekit.model.load import load

    tgt = get_target(target)
    if not isinstance(model, EdgeModel):
        # A target that computes in half precision gets the weights in it: no full fp32 copy held during export.
        wanted = tgt.capabilities.load_dtype
        model = load(model, dtype=None if wanted == "stored" else getattr(torch, wanted))
    spec = TargetSpec(quant=quant or tgt.capabilities.default_quant, max_seq_len=max_seq_len or min(512, model.default_max_seq_len),
                      kv_cache=kv_cache, last_logits_only=last_logits_only, options=dict(options))
    spec.check_against(tgt, model)
    out = Path(out) if out is not None else Path(f"{model.name}-{tgt.name}-{spec.quant}")
    check_output_path(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(out)  # .partial folders of killed exports into the same place (their process is gone)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    stages = progress.Stages(f"export {model.name} → {tgt.name} ({spec.quant})", show=show_progress)
    try:
        with progress.activate(stages):
            artifact = tgt.export(model, spec, tmp)
            artifact.metadata.update(_common_metadata(model, tgt.name, spec))
            if validate:
                from edgekit.validate import compare

                with stages.stage("validate"):
                    artifact.metadata["validation"] = compare(tgt, artifact, model, spec)
        artifact.metadata["stage_seconds"] = dict(stages.timings)
        # what was validated, so bundling this folder later can tell whether its files are still these
        artifact.metadata[FILE_HASHES] = artifact_file_hashes(tmp, artifact.files)
        artifact.save()
    except ParityError:
        if keep_failed:
            failed = out.with_name(out.name + ".failed")
            shutil.rmtree(failed, ignore_errors=True)
            tmp.rename(failed)
            log.error("validation failed; the artifact is kept for debugging at %s", failed)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # interrupted or failed: no partial artifact
        raise
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    tmp.rename(out)
    artifact.path = out
    return artifact


def _common_metadata(model: EdgeModel, target: str, spec: TargetSpec) -> dict[str, Any]:
    import edgekit

    tok = model._tokenizer
    return {
        "edgekit_version": edgekit.__version__,
        "model": model_facts(model),
        "target": target,
        "quant": spec.quant,
        "kv_cache": spec.kv_cache,
        "max_seq_len": spec.max_seq_len,
        "last_logits_only": spec.last_logits_only,
        "options": spec.options,
        "vocab_size": model.config.vocab_size,
        "bos_id": tok.bos_id if tok is not None else model.config.bos_token_id,
        "eos_ids": list(model.stop_ids),
        "generation_defaults": model.generation_defaults,
    }
