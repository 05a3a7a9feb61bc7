"""The `edgekit` command line: one subcommand per public function, each in its own module."""
from __future__ import annotations

import importlib
import logging
import sys

import click
from rich.console import Console
from rich.logging import RichHandler

from edgekit.errors import EdgekitError

# module (in edgekit.cli) -> command name; each module defines `command`
COMMANDS = ["info", "targets_cmd", "generate", "export_cmd", "bundle_cmd", "verify", "run", "profile_cmd",
            "devices", "report", "demo"]

err_console = Console(stderr=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="edgekit")
def cli(verbose: int) -> None:
    """edgekit: export small reasoning models to phones and edge boards, bundle them, profile them."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(message)s", handlers=[RichHandler(console=err_console, show_path=False)])


for _name in COMMANDS:
    try:
        _mod = importlib.import_module(f"edgekit.cli.{_name}")
    except ModuleNotFoundError as e:
        if e.name != f"edgekit.cli.{_name}":
            raise
        continue
    cli.add_command(_mod.command)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        err_console.print("[red]aborted[/]")
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except EdgekitError as e:
        err_console.print(f"[bold red]error[/] ({type(e).__name__}): {e}")
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/]")
        sys.exit(130)
