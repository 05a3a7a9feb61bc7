"""edgekit.bundle(): export (or take an existing artifact) and write an app-ready bundle, atomically."""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.bundling.manifest import MANIFEST, SCHEMA_VERSION, file_table
from edgekit.bundling.staging import clean_stale, finalize, staging_dir
from edgekit.errors import BundleError
from edgekit.outputs import check_output_path, write_errors
from edgekit.runtime import speculate
from edgekit.targets.base import Artifact, default_quant
from edgekit.targets.schemes import check_all

if TYPE_CHECKING:
    from edgekit.bundling.reader import Bundle
    from edgekit.model.edge_model import EdgeModel
    from edgekit.model.tokenizer import Tokenizer
    from edgekit.targets.base import Target

log = logging.getLogger(__name__)
RUNNER_ENTRY = "open_session"
# numpy + stdlib only: what a device runner or an app imports to decode speculatively (edgekit/runtime/speculate.py)
SPECULATE_FILE = Path(speculate.SOURCE_FILE)
SPECULATE_NAME = speculate.SHIPPED_AS


def resolve_targets(target: str | list[str] | tuple[str, ...] | None) -> list[Target]:
    """"all" -> every installed target; "a,b" or a list -> those; aliases accepted; duplicates dropped."""
    from edgekit.targets.registry import get_target, targets

    if target is None:
        raise BundleError("no target given; pass target='android' | 'ios' | 'iot' (or a list, or 'all')")
    names = [target] if isinstance(target, str) else list(target)
    names = [n.strip() for item in names for n in item.split(",") if n.strip()]
    if names == ["all"]:
        found = targets()
        if not found:
            get_target("all")  # raises UnknownTarget saying nothing is installed
        return found
    out: dict[str, Target] = {}
    for n in names:
        t = get_target(n)
        out.setdefault(t.name, t)
    return list(out.values())


def bundle_name(model_name: str, target: Target, quant: str) -> str:
    return f"{model_name}-{target.name}-{quant}"


def bundle(source: EdgeModel | Artifact | str | Path, target: str | list[str] | None = None, *,
           out: str | Path = "dist", quant: str | None = None, max_seq_len: int | None = None,
           kv_cache: str | None = None, last_logits_only: bool = True, zip: bool = False, force: bool = False,
           name: str | None = None, validate: bool = True, tokenizer: Tokenizer | None = None,
           show_progress: bool | None = None, sign_key: str | Path | None = None,
           **options: Any) -> Bundle | list[Bundle]:
    """Write an app-ready bundle into the folder `out` (as `<name>/` or `<name>.zip`); returns the opened Bundle.

    `source` is an EdgeModel, a checkpoint path / built-in name (exported on the way, once per target, from one
    load), an Artifact, or an artifact folder. `target` is a name, alias, list, or "all" (a list if several).
    Nothing half-written is ever left at the output path; an existing one is refused unless force=True.
    `sign_key` (an Ed25519 private key, PEM; needs `pip install edgekit[sign]`) adds manifest.sig.
    """
    out_dir = Path(out)
    if sign_key is not None:
        from edgekit.bundling.signing import check_keys_usable

        check_keys_usable(sign_key=sign_key)  # before any (slow) export
    if isinstance(source, (str, Path)) and (Path(source) / "artifact.json").is_file():
        source = Artifact.load(source)
    if isinstance(source, Artifact):
        given = {k: v for k, v in dict(quant=quant, max_seq_len=max_seq_len, kv_cache=kv_cache, **options).items()
                 if v is not None}
        if given:
            raise BundleError(f"{', '.join(sorted(given))} cannot change an artifact that is already exported "
                              f"({source.path}); export again with them, or bundle the model instead")
        if target is not None and resolve_targets(target)[0].name != source.target:
            raise BundleError(f"the artifact at {source.path} is for target {source.target!r}, not {target!r}")
        b = _bundle_artifact(source, out_dir, zip=zip, force=force, name=name, tokenizer=tokenizer,
                             sign_key=sign_key)
        return b
    from edgekit.model.edge_model import EdgeModel
    from edgekit.model.load import load

    model = source if isinstance(source, EdgeModel) else load(source)
    tok = tokenizer or model.tokenizer  # TokenizerError now, before any export
    tgts = resolve_targets(target)
    if name and len(tgts) > 1:
        raise BundleError(f"name={name!r} names one bundle but {len(tgts)} targets were asked for; leave name unset")
    if quant is not None:
        check_all(tgts, quant)   # every target holds the scheme, or none is exported
    plan = []
    for t in tgts:  # check every output path before the first (slow) export
        q = quant or default_quant(t.capabilities, model)
        final = _final_path(out_dir, name or bundle_name(model.name, t, q), zip)
        check_output_path(final, force, [model.source])
        plan.append((t, q, final))
    made = [_export_and_bundle(model, tok, t, q, final, force=force, zip=zip, max_seq_len=max_seq_len,
                               kv_cache=kv_cache or "fp32", last_logits_only=last_logits_only, validate=validate,
                               show_progress=show_progress, options=options, sign_key=sign_key)
            for t, q, final in plan]
    return made[0] if isinstance(target, str) and target != "all" and "," not in target else made


def _final_path(out_dir: Path, name: str, zip: bool) -> Path:
    return out_dir / (f"{name}.zip" if zip else name)


def _export_and_bundle(model: EdgeModel, tok: Tokenizer, tgt: Target, quant: str, final: Path, *, force: bool,
                       zip: bool, validate: bool, options: dict[str, Any], sign_key: str | Path | None,
                       **spec: Any) -> Bundle:
    from edgekit.export_api import export

    with write_errors(final.parent):
        final.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(final)
        with staging_dir(final) as stage:
            art = export(model, tgt.name, quant=quant, out=stage / "artifact", validate=validate, **spec, **options)
            folder = stage / final.name.removesuffix(".zip")
            assemble(folder, art, tgt, tok, move=True, sign_key=sign_key)
            return finalize(folder, final, zip=zip, force=force, protected=[model.source])


def _bundle_artifact(art: Artifact, out_dir: Path, *, zip: bool, force: bool, name: str | None,
                     tokenizer: Tokenizer | None, sign_key: str | Path | None = None) -> Bundle:
    from edgekit.bundling.artifact_files import check_unchanged
    from edgekit.targets.registry import get_target

    tgt = get_target(art.target)
    art = check_unchanged(art)   # validation figures only travel with the files they were measured on
    model_name = art.metadata.get("model", {}).get("name") or art.path.name
    final = _final_path(out_dir, name or bundle_name(model_name, tgt, scheme_name(art.metadata)), zip)
    check_output_path(final, force, [art.path])  # never replaces the artifact being bundled
    tok = tokenizer or tokenizer_for_artifact(art)
    with write_errors(final.parent):
        final.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(final)
        with staging_dir(final) as stage:
            folder = stage / final.name.removesuffix(".zip")
            assemble(folder, art, tgt, tok, move=False, sign_key=sign_key)
            return finalize(folder, final, zip=zip, force=force, protected=[art.path])


def tokenizer_for_artifact(art: Artifact) -> Tokenizer:
    """The tokenizer the artifact carries; for an older artifact without one, its recorded checkpoint's (checked by
    sha256 where known)."""
    from edgekit.hashing import file_sha256
    from edgekit.model.load import load
    from edgekit.model.tokenizer import Tokenizer

    if "tokenizer.json" in art.files:   # written by the export (covered by its file hashes): no checkpoint needed
        return Tokenizer.from_folder(art.path, tuple(art.metadata.get("eos_ids", ())))
    # an artifact made before exports carried their tokenizer: the checkpoint it records
    facts = art.metadata.get("model", {})
    src = Path(facts.get("source", ""))
    if not facts.get("source") or not src.exists():
        raise BundleError(f"the artifact at {art.path} records its checkpoint as {str(src)!r}, which is not here; "
                          "pass the tokenizer (tokenizer=model.tokenizer) or bundle from the model")
    if src.is_file() and facts.get("source_sha256") and file_sha256(src) != facts["source_sha256"]:
        raise BundleError(f"{src} changed since the artifact at {art.path} was exported (sha256 differs); "
                          "re-export, or pass tokenizer= explicitly")
    if src.is_dir():
        return Tokenizer.from_folder(src, tuple(art.metadata.get("eos_ids", ())))
    return load(src).tokenizer


def _place(src: Path, dst: Path, move: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if move:
        os.replace(src, dst)
    elif src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)


def assemble(folder: Path, art: Artifact, tgt: Target, tok: Tokenizer, *, move: bool,
             sign_key: str | Path | None = None) -> dict[str, Any]:
    """Lay the bundle out in `folder` (artifact files, tokenizer, kernels, runner, README, manifest, its pin and
    optional signature)."""
    from edgekit.bundling.readme import render_readme

    folder.mkdir(parents=True)
    for rel in art.files:
        if not (art.path / rel).exists():
            raise BundleError(f"the artifact at {art.path} lists {rel!r} but the file is not there")
        _place(art.path / rel, folder / rel, move)
    tok_files = tok.save_with_config(folder)
    kernels = [_place_asset(Path(asset), art.path, folder) for asset in tgt.device_assets(art) or []]
    runner = _standalone(tgt)
    if runner is not None:
        shutil.copy2(runner, folder / runner.name)
    # every position's logits: the bundle carries edgekit's speculative decoding loop for runners and apps
    speculate = SPECULATE_FILE if runner is not None and not art.metadata.get("last_logits_only", False) else None
    if speculate is not None:
        shutil.copy2(SPECULATE_FILE, folder / SPECULATE_NAME)
    doc = manifest_for(folder.name, art, tgt, tok, tok_files, kernels, runner.name if runner else None,
                       SPECULATE_NAME if speculate else None)
    (folder / "README.md").write_text(render_readme(doc), encoding="utf-8")
    doc["files"] = file_table(folder)
    (folder / MANIFEST).write_text(json.dumps(doc, indent=2, default=_json_default) + "\n", encoding="utf-8")
    from edgekit.bundling.pin import write_pin

    write_pin(folder)
    if sign_key is not None:
        from edgekit.bundling.signing import sign_folder

        sign_folder(folder, sign_key)
    return doc


def _place_asset(asset: Path, art_dir: Path, folder: Path) -> str:
    """An asset inside the artifact folder keeps its relative path (the metadata may refer to it); others go to
    kernels/. Returns the bundle-relative path. An artifact's own file may have been moved into the bundle already
    (bundling straight from an export moves the files rather than copying them)."""
    try:
        rel = asset.absolute().relative_to(art_dir.absolute()).as_posix()
    except ValueError:
        rel = f"kernels/{asset.name}"
    if (folder / rel).exists():
        return rel
    if not asset.exists():
        raise BundleError(f"the target lists device asset {asset}, which does not exist")
    _place(asset, folder / rel, move=False)
    return rel


def _standalone(tgt: Target) -> Path | None:
    fn = getattr(tgt, "standalone_session", None)
    path = fn() if callable(fn) else None
    if path is not None and not Path(path).is_file():
        raise BundleError(f"target {tgt.name!r} names its standalone session {path}, which does not exist")
    return Path(path) if path is not None else None


def _json_default(o: Any) -> Any:
    from edgekit.targets.base import _jsonable

    return _jsonable(o)


def scheme_name(md: dict[str, Any]) -> str:
    """The quant name an export was asked for (a shared scheme's, or the target's own)."""
    return (md.get("quant_scheme") or {}).get("name") or md.get("quant", "fp32")


def manifest_for(name: str, art: Artifact, tgt: Target, tok: Tokenizer, tok_files: list[str],
                 kernels: list[str], runner: str | None, speculate: str | None = None) -> dict[str, Any]:
    """The manifest (schema SCHEMA_VERSION) without `files`, which is filled once every file is written."""
    import edgekit
    from edgekit.bundling.facts import chat_format, generation_settings, io_signature, model_entry, target_entry

    md = art.metadata
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "edgekit_version": edgekit.__version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "name": name,
        "model": model_entry(md, tok),
        "target": target_entry(tgt, md),
        "artifact": {"files": list(art.files), "main": art.files[0], "target": art.target, "metadata": md},
        "quant": scheme_name(md),
        # what the scheme means (grids, activations) and what this target made of it: its own quant name, the
        # options the scheme set and those the user changed on top (edgekit.targets.schemes)
        "quant_scheme": md.get("quant_scheme"),
        "kv_cache": md.get("kv_cache", "fp32"),
        "max_seq_len": int(md["max_seq_len"]),
        "last_logits_only": bool(md.get("last_logits_only", False)),
        "io": io_signature(md),
        "tokenizer": {"file": "tokenizer.json", "bos_id": tok.bos_id, "bos_token": tok.bos_token,
                      "eos_token": tok.eos_token, "add_bos": tok.add_bos,
                      "stop_ids": [int(i) for i in dict.fromkeys(list(md.get("eos_ids", [])) + list(tok.stop_ids))],
                      "chat_template_file": "chat_template.jinja" if "chat_template.jinja" in tok_files else None,
                      "config_file": "tokenizer_config.json", "chat_format": chat_format(tok)},
        "generation": generation_settings(md.get("generation_defaults", {})),
        "kernels": kernels,
        "runner": ({"file": runner, "entry": RUNNER_ENTRY, **({"speculate_file": speculate} if speculate else {})}
                   if runner else None),
        "files": {},
        "validation": md.get("validation") or {},
        # KL / same top token / perplexity against the unquantized model on the shipped text (edgekit.quality);
        # null when the export was not evaluated
        "quality": md.get("quality"),
    }
    return doc
