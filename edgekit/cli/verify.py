from __future__ import annotations

import click

from edgekit.cli.common import console, human_bytes


@click.command("verify")
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path())
@click.option("--no-target-check", is_flag=True, help="Do not require the bundle's target plugin to be installed.")
@click.option("--public-key", type=click.Path(), default=None, metavar="PUB.pem",
              help="Require manifest.sig to be a valid signature by this Ed25519 public key (pip install edgekit[sign]).")
def command(bundle_path, no_target_check, public_key) -> None:
    """Check a bundle (folder or .zip): manifest.json against manifest.sha256 (and its signature with --public-key),
    schema, every path it names inside the bundle and hashed, every file's sha256 and size, its target."""
    from edgekit.bundling import Bundle

    b = Bundle.open(bundle_path, check_target=not no_target_check, public_key=public_key)
    r = b.report
    m = b.manifest
    target = "target not checked" if no_target_check else f"target {m['target']['name']} installed"
    if public_key:
        target += f"; signature valid for {public_key}"
    console.print(f"[green]ok[/] {b.name} ({m['quant']}, manifest schema {m['schema_version']}, matching "
                  f"manifest.sha256): {r.files_checked} files ({human_bytes(r.bytes_checked)}) match their sha256 "
                  f"and size, every named path inside the bundle; {target}")
