from __future__ import annotations

import click

from edgekit.cli.common import MODEL_ARG, console, human_bytes


@click.command("bundle")
@MODEL_ARG
@click.option("--target", "-t", "target", default=None, help="android | ios | iot (any target name or alias).")
@click.option("--targets", "targets", default=None, help="Several at once from one load: 'all' or a comma list.")
@click.option("--quant", "-q", default=None, help="Quantization scheme (default: each target's).")
@click.option("--max-seq-len", type=int, default=None, help="KV-cache length (default 512).")
@click.option("--kv-cache", default=None, help="KV-cache dtype: fp32 or int8 where supported.")
@click.option("--option", "-O", "options", multiple=True, metavar="NAME=VALUE", help="Target-specific option.")
@click.option("--all-logits", is_flag=True,
              help="Return every position's logits (not only the last), so runners can verify speculative drafts "
                   "(edgekit run / profile --speculate ngram); costs prefill time (README: speculative decoding).")
@click.option("--zip", "as_zip", is_flag=True, help="Write <name>.zip instead of a folder.")
@click.option("--name", default=None, help="Bundle name (default <model>-<target>-<quant>; one target only).")
@click.option("--out", "-o", type=click.Path(), default="dist", show_default=True, help="Folder to write bundles in.")
@click.option("--no-validate", is_flag=True, help="Skip the export's parity check (not recommended).")
@click.option("--no-eval", is_flag=True, help="Skip measuring quality on the shipped text (and its gate), for speed.")
@click.option("--force", is_flag=True, help="Replace an existing bundle at the output path.")
@click.option("--sign-key", type=click.Path(), default=None, metavar="PRIVATE.pem",
              help="Sign manifest.json with this Ed25519 private key (writes manifest.sig; pip install edgekit[sign]).")
def command(model, target, targets, quant, max_seq_len, kv_cache, options, all_logits, as_zip, name, out, no_validate,
            no_eval, force, sign_key) -> None:
    """Export MODEL (a checkpoint, built-in name, or an exported artifact folder) into app-ready bundle(s)."""
    from pathlib import Path

    from edgekit.bundling import bundle
    from edgekit.cli.export_cmd import parse_options

    is_artifact = (Path(model) / "artifact.json").is_file()
    if target and targets or not (target or targets or is_artifact):
        raise click.UsageError("give one of --target NAME or --targets all|a,b (optional for an artifact folder)")
    made = bundle(model, target=target or (targets.split(",") if targets else None), out=out, quant=quant,
                  max_seq_len=max_seq_len, kv_cache=kv_cache, last_logits_only=not all_logits, zip=as_zip, name=name, force=force, validate=not no_validate,
                  sign_key=sign_key, **({"evaluate": False} if no_eval else {}), **parse_options(options))
    for b in made if isinstance(made, list) else [made]:
        m = b.manifest
        size = sum(f["bytes"] for f in m["files"].values())
        v = m["validation"]
        fig = f", max |Δlogit| {v['max_abs_logit_diff']:.3g}" if "max_abs_logit_diff" in v else ""
        q = m.get("quality") or {}
        fig += f", KL {q['mean_kl']:.3g}, same top {q['same_top']:.0%}" if "mean_kl" in q else ""
        console.print(f"[green]wrote[/] {b.source} ({m['target']['name']}, {m['quant']}, {len(m['files'])} files, "
                      f"{human_bytes(size)}{fig})")
