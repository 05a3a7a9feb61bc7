"""edgekit.export(): spec checks, atomic output, timed stages, validation in the target's own runtime."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from edgekit import progress
from edgekit.bundling.artifact_files import FILE_HASHES, artifact_file_hashes
from edgekit.bundling.staging import clean_stale
from edgekit.errors import ParityError
from edgekit.hashing import file_sha256
from edgekit.model.edge_model import EdgeModel
from edgekit.outputs import check_output_path, edgekit_output_kind, place, write_errors
from edgekit.targets.base import Artifact, TargetSpec, default_quant
from edgekit.targets.options import coerce
from edgekit.targets.registry import get_target
from edgekit.targets.schemes import bind

log = logging.getLogger(__name__)


def model_facts(model: EdgeModel) -> dict[str, Any]:
    cfg = model.config
    return {"name": model.name, "family": cfg.family, "architecture": cfg.architecture,
            "parameters": cfg.num_parameters, "layers": cfg.num_layers, "vocab_size": cfg.vocab_size,
            "max_position_embeddings": cfg.max_position_embeddings,
            "source": str(model.source), "source_format": model.source_format, "source_quant": model.source_quant_type,
            "source_sha256": file_sha256(model.source) if model.source.is_file() else None}


def export(model: EdgeModel | str | Path, target: str, *, quant: str | None = None, max_seq_len: int | None = None,
           kv_cache: str = "fp32", last_logits_only: bool = False, out: str | Path | None = None,
           validate: bool = True, keep_failed: bool = False, force: bool = False, show_progress: bool | None = None,
           evaluate: bool | None = None, **options: Any) -> Artifact:
    """Export `model` for `target` into the folder `out`; validated against the PyTorch reference unless validate=False.

    Nothing half-written is left at `out`: the files are written into a temp folder beside it and renamed on success.
    A ParityError leaves nothing behind unless keep_failed=True (then the files stay at `<out>.failed`).
    evaluate (default: as validate) measures the artifact against the unquantized model on the shipped text into
    metadata["quality"] and fails with QualityError (a ParityError) beyond its scheme's bound (edgekit.quality.gate).
    """
    from edgekit.model.load import load

    tgt = get_target(target)
    if not isinstance(model, EdgeModel):
        # A target that computes in half precision gets the weights in it: no full fp32 copy held during export.
        wanted = tgt.capabilities.load_dtype
        model = load(model, dtype=None if wanted == "stored" else getattr(torch, wanted))
    bound = bind(tgt.name, tgt.capabilities, quant or default_quant(tgt.capabilities, model), dict(options))
    typed = coerce(tgt.name, tgt.capabilities, bound.options)   # "32" -> 32, "true" -> True; bad values fail here
    spec = TargetSpec(quant=bound.quant, max_seq_len=max_seq_len or min(512, model.default_max_seq_len),
                      kv_cache=kv_cache, last_logits_only=last_logits_only, options=typed)
    spec.check_against(tgt, model)
    out = Path(out) if out is not None else Path(f"{model.name}-{tgt.name}-{bound.record['name']}")
    protected = [model.source]  # --force never replaces the checkpoint being read (or a folder above it)
    check_output_path(out, force, protected)
    with write_errors(out.parent):
        out.parent.mkdir(parents=True, exist_ok=True)
        return _export_into(model, tgt, spec, out, validate=validate, keep_failed=keep_failed, force=force,
                            protected=protected, show_progress=show_progress,
                            evaluate=validate if evaluate is None else evaluate, scheme=bound.record)


def _export_into(model: EdgeModel, tgt: Any, spec: TargetSpec, out: Path, *, validate: bool, keep_failed: bool,
                 force: bool, protected: list[Path], show_progress: bool | None, evaluate: bool = False,
                 scheme: dict[str, Any] | None = None) -> Artifact:
    clean_stale(out)  # .partial folders of killed exports into the same place (their process is gone)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    stages = progress.Stages(f"export {model.name} → {tgt.name} ({spec.quant})", show=show_progress)
    artifact = None
    try:
        with progress.activate(stages):
            artifact = tgt.export(model, spec, tmp)
            if model.has_tokenizer and "tokenizer.json" not in artifact.files:
                # the artifact carries its tokenizer and chat template: bundling it later needs no checkpoint
                artifact.files += [f for f in model.tokenizer.save_with_config(tmp) if f not in artifact.files]
            artifact.metadata.update(_common_metadata(model, tgt.name, spec))
            # the shared scheme asked for and what this target made of it (edgekit.targets.schemes)
            artifact.metadata["quant_scheme"] = scheme
            if validate:
                from edgekit.validate import compare

                with stages.stage("validate"):
                    artifact.metadata["validation"] = compare(tgt, artifact, model, spec)
            if evaluate:
                from edgekit.quality.export_check import evaluate_export

                with stages.stage("evaluate"):
                    evaluate_export(tgt, artifact, model, spec)
        artifact.metadata["stage_seconds"] = dict(stages.timings)
        # what was validated, so bundling this folder later can tell whether its files are still these
        artifact.metadata[FILE_HASHES] = artifact_file_hashes(tmp, artifact.files)
        artifact.save()
    except ParityError:
        if keep_failed:
            failed = out.with_name(out.name + ".failed")
            if edgekit_output_kind(failed) == "artifact":   # an earlier failed export: ours to replace
                shutil.rmtree(failed, ignore_errors=True)
            elif os.path.lexists(failed):                   # something else: never touched
                failed = out.with_name(f"{out.name}.failed-{os.getpid()}")
            if artifact is not None:
                artifact.save()   # artifact.json marks it as edgekit's, for the next run to replace
            tmp.rename(failed)
            log.error("validation failed; the artifact is kept for debugging at %s", failed)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # interrupted or failed: no partial artifact
        raise
    try:
        place(tmp, out, force=force, protected=protected, keep_as=out.with_name(f"{out.name}.new-{os.getpid()}"),
              what="export")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a conflict moved it to keep_as already
        raise
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
