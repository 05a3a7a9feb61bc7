from __future__ import annotations

import click

from edgekit.cli.common import console, generation_summary, sampling_options, stream_printer


@click.command("run")
@click.argument("bundle_path", metavar="BUNDLE", type=click.Path())
@click.option("--prompt", "-p", required=True)
@click.option("--chat", is_flag=True, help="Wrap the prompt in the bundle's chat template.")
@click.option("--system", default=None, help="System message (with --chat).")
@click.option("--hide-reasoning", is_flag=True, help="Do not print <think> reasoning.")
@click.option("--public-key", type=click.Path(), default=None, metavar="PUB.pem",
              help="Run only if manifest.sig is a valid signature by this Ed25519 public key.")
@sampling_options
def command(bundle_path, prompt, chat, system, hide_reasoning, public_key, **sampling) -> None:
    """Generate from a bundle's own artifact on this host (folder or .zip; verified first)."""
    from edgekit.bundling import Bundle

    b = Bundle.open(bundle_path, public_key=public_key)
    res = b.generate(prompt, chat=chat, system=system, stream=stream_printer(not hide_reasoning), **sampling)
    console.print()
    console.print(f"[dim]{generation_summary(res)}[/]")
