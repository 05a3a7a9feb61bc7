"""The `edgekit` command line: one subcommand per public function, each in its own module."""
from __future__ import annotations

import importlib
import logging
import sys

import click
from rich.logging import RichHandler
from rich.markup import escape

from edgekit.consoles import make_console
from edgekit.errors import EdgekitError

# module (in edgekit.cli) -> command name; each module defines `command`
COMMANDS = ["info", "targets_cmd", "generate", "export_cmd", "bundle_cmd", "verify", "run", "profile_cmd",
            "devices", "report", "demo", "eval_cmd", "plan_cmd"]

err_console = make_console(stderr=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True,
              help="More log output (-v info, -vv debug and other libraries' output, ExecuTorch's native log lines "
                   "included: without -vv those go to edgekit-native.log in edgekit's cache folder).")
@click.version_option(package_name="edgekit")
def cli(verbose: int) -> None:
    """edgekit: export small reasoning models to phones and edge boards, bundle them, profile them."""
    level = logging.WARNING - 10 * min(verbose, 2)
    handler = RichHandler(console=err_console, show_path=False)
    # edgekit's own messages at the chosen level; other libraries' chatter (coremltools, torchao, executorch
    # version notices, tqdm pass bars) only with -vv, so a user sees what edgekit has to say.
    other = logging.ERROR if verbose < 2 else logging.DEBUG
    handler.addFilter(lambda r: r.levelno >= (level if r.name.startswith("edgekit") else other))
    logging.basicConfig(level=min(level, other), format="%(message)s", handlers=[handler])
    if verbose < 2:
        import os
        import warnings

        warnings.simplefilter("ignore")
        # torch logs through a handler of its own (not propagated to ours): its pytree deprecation notices, raised by
        # torchao's imports, would print between the progress lines
        logging.getLogger("torch").setLevel(logging.ERROR)
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("PYTHONWARNINGS", "ignore")           # the same for worker processes (edgekit demo)
        os.environ.setdefault("EDGEKIT_QUIET_THIRD_PARTY", "1")


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
        # one line (soft_wrap: no wrapping at the console width); the message is text, not rich markup
        err_console.print(f"[bold red]error[/] ({type(e).__name__}): {escape(str(e))}", soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/]")
        sys.exit(130)
