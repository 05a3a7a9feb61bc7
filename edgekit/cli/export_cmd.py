from __future__ import annotations

import click

from edgekit.cli.common import MODEL_ARG, console


def parse_options(pairs: tuple[str, ...]) -> dict:
    """-O NAME=VALUE pairs as strings: the target's declared option types convert them (edgekit.targets.options),
    so '32' is an int only where the option is one."""
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"{pair!r} is not NAME=VALUE", param_hint="--option")
        k, v = pair.split("=", 1)
        out[k.replace("-", "_")] = v
    return out


def print_target_options(name: str) -> None:
    """The quant names and -O options of one target, typed (edgekit.targets.options)."""
    from rich.table import Table

    from edgekit.targets.options import help_rows
    from edgekit.targets.registry import get_target
    from edgekit.targets.schemes import accepted

    tgt = get_target(name)
    console.print(f"[bold]{tgt.name}[/] ({tgt.platform}): --quant {' | '.join(accepted(tgt.capabilities))} "
                  f"(default {tgt.capabilities.default_quant})")
    table = Table(title=f"-O options of {tgt.name}")
    for col in ("option", "accepted", "default", "what it does"):
        table.add_column(col)
    for row in help_rows(tgt.capabilities):
        table.add_row(*row)
    console.print(table)


def _help_target(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is None or ctx.resilient_parsing:
        return
    print_target_options(value)
    ctx.exit(0)


@click.command("export")
@click.option("--help-target", metavar="TARGET", expose_value=False, is_eager=True, callback=_help_target,
              help="Show TARGET's quant schemes and -O options (typed, with defaults), then exit.")
@MODEL_ARG
@click.option("--target", "-t", required=True, help="Target name or alias (edgekit targets lists them).")
@click.option("--quant", "-q", default=None, help="Quantization scheme (default: the target's).")
@click.option("--max-seq-len", type=int, default=None, help="KV-cache length (default 512).")
@click.option("--kv-cache", default="fp32", show_default=True, help="KV-cache dtype: fp32 or int8 where supported.")
@click.option("--last-logits-only", is_flag=True, help="Return only the last position's logits.")
@click.option("--option", "-O", "options", multiple=True, metavar="NAME=VALUE", help="Target-specific option.")
@click.option("--out", "-o", type=click.Path(), default=None, help="Output folder.")
@click.option("--no-validate", is_flag=True, help="Skip the parity check (not recommended).")
@click.option("--no-eval", is_flag=True, help="Skip measuring quality on the shipped text (and its gate), for speed.")
@click.option("--keep-failed", is_flag=True, help="Keep an artifact that failed validation, for debugging.")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
def command(model, target, quant, max_seq_len, kv_cache, last_logits_only, options, out, no_validate, no_eval,
            keep_failed, force) -> None:
    """Export MODEL for a target; the artifact is validated in its own runtime."""
    import edgekit

    art = edgekit.export(model, target, quant=quant, max_seq_len=max_seq_len, kv_cache=kv_cache,
                         last_logits_only=last_logits_only, out=out, validate=not no_validate,
                         keep_failed=keep_failed, force=force, **({"evaluate": False} if no_eval else {}),
                         **parse_options(options))
    v = art.metadata.get("validation", {})
    console.print(f"[green]wrote[/] {art.path} ({', '.join(art.files)})")
    if v:
        console.print(f"validation: max |Δlogit| {v['max_abs_logit_diff']:.3g} (tolerance {v['tolerance']:.3g})"
                      + (f", top-1 agreement with fp32 {v['top1_agreement_vs_fp32']:.0%}" if 'top1_agreement_vs_fp32' in v else ""))
    q = art.metadata.get("quality") or {}
    if "mean_kl" in q:
        console.print(f"quality on {q['text_id']} ({q['tokens']} tokens): KL {q['mean_kl']:.4g}, same top token "
                      f"{q['same_top']:.1%}, perplexity {q['perplexity']:.2f} (fp32 {q['reference_perplexity']:.2f})")
