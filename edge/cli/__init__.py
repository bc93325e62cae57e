"""``moltbot``: the command line. Thin: parses, calls, prints.

Errors are turned into a message, a hint and an exit code in one place (:func:`main`):
2 for bad input or config, 1 for runtime failures; a traceback only with ``--debug``.

Starting fast matters (a line script may run ``moltbot event send`` per part): subcommands
live in their own modules (``edge/cli/*.py``), imported only when run (:class:`LazyGroup`), and
so are the config model, YAML and the package metadata. ``python -X importtime -m edge.cli …``
shows the cost. The builder's commands join through the ``moltbot.commands`` entry points
(:mod:`edge.cli.plugins`).
"""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path

import click

from edge.cli import plugins
from edge.cli.context import CliState
from edge.errors import MoltbotError
from edge.log_format import configure_logging

# The runtime's commands: name → "module:attribute", imported on first use. Each module imports
# edge.cli.context and edge.wiring, never another command module.
LAZY_COMMANDS = {
    "doctor": "edge.cli.device:doctor",
    "run": "edge.cli.device:run",
    "config": "edge.cli.device:config",
    "board": "edge.cli.device:board",
    "outbox": "edge.cli.outbox:outbox",
    "event": "edge.cli.outbox:event",
    "model": "edge.cli.model:model",
    "infer": "edge.cli.model:infer",
    "triggers": "edge.cli.model:triggers",
    "listen": "edge.cli.voice:listen",
    "voice": "edge.cli.voice:voice",
    "system": "edge.cli.system:system",
}
# Commands other installed packages add (plugins.GROUP: the host-side builder's image, flash,
# balena). A device has the runtime without the builder, so there these are simply absent; where
# the builder is installed but cannot load (Python 3.10), running one says why.


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when used (``LAZY_COMMANDS``, plugins)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        found = plugins.installed(LAZY_COMMANDS).items()
        added = [name for name, plugin in found if plugins.load(plugin) is not None]
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS, *added})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        if cmd_name in LAZY_COMMANDS:
            module_name, _, attribute = LAZY_COMMANDS[cmd_name].partition(":")
            loaded: click.Command = getattr(importlib.import_module(module_name), attribute)
            return loaded
        plugin = plugins.installed(LAZY_COMMANDS).get(cmd_name)
        return plugins.load(plugin) if plugin is not None else None


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from edge import __version__  # noqa: PLC0415 - package metadata is slow to read

    click.echo(f"moltbot, version {__version__}")
    ctx.exit()


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    envvar="MOLTBOT_CONFIG",
    help="Config file to read instead of /etc/moltbot/config.yaml (env: MOLTBOT_CONFIG).",
)
@click.option(
    "--log-format",
    type=click.Choice(["auto", "human", "json"]),
    help="Log format; auto: JSON lines under systemd, human text elsewhere.",
)
@click.option(
    "--log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]),
    help="Log level (default: logging.level from the config).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.pass_context
def cli(
    ctx: click.Context,
    config_file: Path | None,
    log_format: str | None,
    log_level: str | None,
    debug: bool,
) -> None:
    """Moltbot Edge: build appliance images and run the appliance."""
    configure_logging(log_format or "auto", log_level or ("DEBUG" if debug else "INFO"))  # type: ignore[arg-type]
    ctx.obj = CliState(config_file, log_format, log_level)


def _wants_debug(argv: list[str]) -> bool:
    return "--debug" in argv


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and map every error to a message and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = cli.main(args=args, prog_name="moltbot", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except MoltbotError as exc:
        if _wants_debug(args):
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    return result if isinstance(result, int) else 0
