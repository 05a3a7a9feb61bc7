from __future__ import annotations

import click

from edgekit.cli.common import MODEL_ARG, console, human_bytes


@click.command("plan")
@MODEL_ARG
@click.option("--device", "-d", default=None, help="Plan for this device (local, ssh://..., adb://...): its free "
              "memory, and the read bandwidth its latest `edgekit profile` measured (default: this host).")
@click.option("--ram", default=None, help="Plan for this much free memory instead (e.g. 8GB, 3.5GiB).")
@click.option("--bandwidth", type=float, default=None, help="Read bandwidth in GB/s (default: the device's).")
@click.option("--context", type=int, default=4096, show_default=True, help="Tokens the KV cache holds.")
@click.option("--logits", type=click.Choice(["last", "all"]), default="last", show_default=True,
              help="Exports returning the last position's logits (bundles) or every position's (speculation).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def command(model, device, ram, bandwidth, context, logits, as_json) -> None:
    """For every installed target and scheme: artifact size, memory at run time at --context, whether it fits,
    and the decode rate the read bandwidth allows. Reads the model's shape only (config.json or a GGUF header)."""
    from rich.table import Table

    from edgekit.plan import plan

    p = plan(model, device=device, ram=ram, context=context, bandwidth=bandwidth, all_logits=logits == "all")
    if as_json:
        click.echo(p.to_json())
        return
    d = p.device
    console.print(f"[bold]{p.model['name']}[/] ({p.model['family']}, {p.model['parameters'] / 1e6:.0f}M parameters), "
                  f"context {p.context:,} tokens; free memory "
                  f"{human_bytes(d['free_bytes']) if d.get('free_bytes') else 'unknown'}"
                  f"{' (' + d['free_from'] + ')' if d.get('free_from') else ''}; read bandwidth "
                  f"{str(round(d['read_bandwidth_gbs'], 1)) + ' GB/s (' + d['bandwidth_from'] + ')' if d.get('read_bandwidth_gbs') else 'unknown'}",
                  highlight=False)
    table = Table("target", "scheme", "artifact", "weights", "KV cache", "activations", "runtime", "total",
                  "fits", "decode tok/s")
    for r in p.rows:
        fits = "-" if r.fits is None else ("yes" if r.fits else "[red]no[/]")
        table.add_row(r.target, r.scheme, human_bytes(r.artifact_bytes), human_bytes(r.weights_bytes),
                      f"{human_bytes(r.kv_cache_bytes)} {r.kv_dtype}", human_bytes(r.activation_bytes),
                      human_bytes(r.runtime_bytes), human_bytes(r.total_bytes), fits,
                      "-" if r.decode_tokens_per_s is None else f"{r.decode_tokens_per_s:.0f}")
    console.print(table)
    for lo in p.left_out:
        console.print(f"[dim]left out: {lo['target']}: {lo['reason']}[/]", highlight=False)
