"""`edgekit devices`: what this host can reach (itself, adb phones, ssh boards from devices.toml, iPhones on macOS)."""
from __future__ import annotations

import click
from rich.table import Table

from edgekit.cli.common import console, human_bytes


@click.command("devices")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def command(as_json: bool) -> None:
    """List reachable devices with their facts (OS, CPU/SoC, cores, RAM, runtime versions)."""
    from dataclasses import asdict

    from edgekit.profiling.devices import devices_file, list_devices

    found = list_devices()
    if as_json:
        import json

        click.echo(json.dumps([asdict(d) for d in found], indent=2))
        return
    t = Table(title=f"devices (config: {devices_file()})")
    for col in ("uri", "name", "os", "cpu / soc", "cores", "RAM", "runtimes", "status"):
        t.add_column(col)
    for d in found:
        f = d.facts
        runtimes = ", ".join(f"{k} {v}" for k, v in (f.get("runtimes") or {}).items()
                             if v and k in ("python", "onnxruntime", "executorch", "coremltools"))
        t.add_row(d.uri, d.name, str(f.get("os", "")), str(f.get("soc") or f.get("cpu") or ""),
                  str(f.get("cores", "")), human_bytes(f["ram_bytes"]) if f.get("ram_bytes") else "", runtimes,
                  "[green]ok[/]" if d.reachable else f"[red]{d.error}[/]")
    console.print(t)
