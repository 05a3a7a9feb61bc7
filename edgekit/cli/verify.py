from __future__ import annotations

import click

from edgekit.cli.common import console, human_bytes


@click.command("verify")
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path())
@click.option("--no-target-check", is_flag=True, help="Do not require the bundle's target plugin to be installed.")
def command(bundle_path, no_target_check) -> None:
    """Check a bundle (folder or .zip): manifest schema, every file's sha256 and size, its target."""
    from edgekit.bundle import Bundle

    b = Bundle.open(bundle_path, check_target=not no_target_check)
    r = b.report
    m = b.manifest
    target = "target not checked" if no_target_check else f"target {m['target']['name']} installed"
    console.print(f"[green]ok[/] {b.name} ({m['quant']}, manifest schema {m['schema_version']}): {r.files_checked} "
                  f"files ({human_bytes(r.bytes_checked)}) match their sha256 and size; {target}")
