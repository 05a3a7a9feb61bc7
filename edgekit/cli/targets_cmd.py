from __future__ import annotations

import click
from rich.table import Table

from edgekit.cli.common import console


@click.command("targets")
@click.option("--json", "as_json", is_flag=True)
def command(as_json: bool) -> None:
    """List installed export targets with their platform and capabilities."""
    from edgekit.quant.registry import get_scheme, scheme_names
    from edgekit.targets.registry import targets
    from edgekit.targets.schemes import accepted

    found = targets()
    if as_json:
        import json
        from dataclasses import asdict

        def described(c) -> dict[str, str]:
            return {n: get_scheme(n).description if n in scheme_names() else "the target's own scheme"
                    for n in accepted(c)}

        click.echo(json.dumps([{"name": t.name, "aliases": list(t.aliases), "platform": t.platform,
                                "quant_accepted": described(t.capabilities),
                                "capabilities": asdict(t.capabilities)} for t in found], indent=2, default=str))
        return
    if not found:
        console.print("no targets installed: pip install -e targets/executorch targets/onnx targets/coreml")
        return
    table = Table(title="installed targets")
    for col in ("name", "aliases", "platform", "quant schemes", "kv cache", "per-op profiling", "runs here",
                "speed options"):
        table.add_column(col)
    for t in found:
        c = t.capabilities
        table.add_row(t.name, ", ".join(t.aliases), t.platform, ", ".join(accepted(c)), ", ".join(c.kv_cache),
                      "yes" if c.per_op_profiling else "no", "yes" if c.host_runnable else "no",
                      ", ".join(f"{k}={v}" for k, v in c.speed_options) or "-")
    console.print(table)
    shared = Table(title="shared quant schemes (one meaning on every target that lists them)")
    for col in ("scheme", "meaning", "targets"):
        shared.add_column(col)
    for n in scheme_names():
        holders = [t.name for t in found if n in accepted(t.capabilities)]
        shared.add_row(n, get_scheme(n).description, ", ".join(holders) or "-")
    console.print(shared)
    from edgekit.cli.export_cmd import print_target_options

    for t in found:
        print_target_options(t.name)
