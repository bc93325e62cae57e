"""``moltbot``: the command line. Thin: parses, calls, prints.

Errors are turned into a message, a hint and an exit code in one place (:func:`main`):
2 for bad input or config, 1 for runtime failures; a traceback only with ``--debug``.

Starting fast matters (a line script may run ``moltbot event send`` per part): subcommands
live in their own modules, imported only when run (:class:`LazyGroup`), and so are the config
model, YAML and the package metadata. ``python -X importtime -m edge.cli …`` shows the cost.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click

from edge.errors import MoltbotError
from edge.log_format import configure_logging

if TYPE_CHECKING:
    from edge.config import LoadedConfig

logger = logging.getLogger(__name__)
# Subcommands defined in other modules: name → "module:attribute", imported on first use.
LAZY_COMMANDS = {
    "outbox": "edge.outbox_cli:outbox",
    "event": "edge.outbox_cli:event",
    "model": "edge.model_cli:model",
    "infer": "edge.model_cli:infer",
    "triggers": "edge.model_cli:triggers",
    "listen": "edge.voice_cli:listen",
    "voice": "edge.voice_cli:voice",
    "system": "edge.system_cli:system",
    # the host-side builder ships in the same distribution; the runtime never imports it
    "image": "images.cli:image",
    "flash": "images.cli:flash_command",
    "balena": "images.cli:balena_group",
}


class LazyGroup(click.Group):
    """A group whose subcommands in ``LAZY_COMMANDS`` are imported only when used."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        lazy = [name for name in LAZY_COMMANDS if self._importable(name)]
        return sorted({*super().list_commands(ctx), *lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in LAZY_COMMANDS:
            return command
        module_name, _, attribute = LAZY_COMMANDS[cmd_name].partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            if not module_name.startswith("images."):
                raise
            logger.debug("the image builder is not installed here: %s", exc)
            return None
        loaded: click.Command = getattr(module, attribute)
        return loaded

    @staticmethod
    def _importable(name: str) -> bool:
        module_name = LAZY_COMMANDS[name].partition(":")[0]
        return importlib.util.find_spec(module_name.partition(".")[0]) is not None


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from edge import __version__  # noqa: PLC0415 - package metadata is slow to read

    click.echo(f"moltbot, version {__version__}")
    ctx.exit()


@dataclass
class CliState:
    """What the global options said; the config is loaded on first use only."""

    config_file: Path | None
    log_format: str | None
    log_level: str | None
    _loaded: LoadedConfig | None = field(default=None, repr=False)

    def loaded(self) -> LoadedConfig:
        if self._loaded is None:
            from edge.config import load_config  # noqa: PLC0415 - pydantic: only when needed

            self._loaded = load_config(config_file=self.config_file)
            logging_settings = self._loaded.config.logging
            configure_logging(
                self.log_format or logging_settings.format,  # type: ignore[arg-type]
                self.log_level or logging_settings.level,
            )
        return self._loaded


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


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("/"),
    show_default=True,
    help="Root to read /proc and /sys under (for testing).",
)
@click.option(
    "--broker-timeout",
    type=float,
    default=3.0,
    show_default=True,
    help="Seconds to wait for the MQTT broker's CONNACK.",
)
@click.option("--strict", is_flag=True, help="Exit non-zero on warnings too.")
@click.pass_obj
def doctor(state: CliState, as_json: bool, root: Path, broker_timeout: float, strict: bool) -> int:
    """Check that this device can run what its config asks for; each problem says its fix."""
    from edge.doctor import Status, format_report, run_doctor  # noqa: PLC0415

    report = run_doctor(state.loaded().config, root=root, broker_timeout_s=broker_timeout)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        click.echo(format_report(report))
    return 1 if report.worst(strict=strict) == Status.FAIL else 0


@cli.command()
@click.pass_obj
def run(state: CliState) -> int:
    """Run the appliance: model, triggers, outbox + MQTT uplink and the local API."""
    from edge.service import run_appliance  # noqa: PLC0415

    return run_appliance(state.loaded().config)


@cli.group()
def config() -> None:
    """Show the effective config, its JSON Schema, or the reference of every setting."""


@config.command("show")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "yaml", "json"]),
    default="table",
    show_default=True,
    help="table: every setting with its source; yaml/json: the redacted config.",
)
@click.pass_obj
def config_show(state: CliState, output_format: str) -> None:
    """Print the effective config, secrets redacted, with where each value came from."""
    from edge.config.view import effective_rows, format_rows, redacted_tree  # noqa: PLC0415

    loaded = state.loaded()
    if output_format == "table":
        files = ", ".join(str(path) for path in loaded.files_read) or "none"
        click.echo(f"# files read (lowest precedence first): {files}")
        click.echo(format_rows(effective_rows(loaded)))
    elif output_format == "yaml":
        import yaml  # noqa: PLC0415

        click.echo(yaml.safe_dump(redacted_tree(loaded.config), sort_keys=False), nl=False)
    else:
        click.echo(json.dumps(redacted_tree(loaded.config), indent=2))


@config.command("schema")
def config_schema() -> None:
    """Print the JSON Schema of the config file."""
    from edge.config.model import MoltbotConfig  # noqa: PLC0415

    click.echo(json.dumps(MoltbotConfig.model_json_schema(), indent=2))


@config.command("reference")
def config_reference() -> None:
    """Print every setting as a Markdown table (the README's config reference)."""
    from edge.config.view import reference_markdown  # noqa: PLC0415

    click.echo(reference_markdown())


@cli.group()
def board() -> None:
    """List the board profiles and detect this board."""


@board.command("list")
def board_list() -> None:
    """List the board profiles shipped in hw/."""
    from edge.board import load_board_profiles  # noqa: PLC0415

    for profile in load_board_profiles().values():
        backends = " > ".join(profile.inference_backends)
        click.echo(
            f"{profile.name:<18} {profile.arch:<8} {profile.boot_medium:<5} "
            f"backends: {backends:<28} {profile.description}"
        )


@board.command("detect")
@click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("/"),
    show_default=True,
    help="Root to read the device tree under (for testing).",
)
def board_detect(root: Path) -> int:
    """Detect this board from the device tree (or the CPU architecture without one)."""
    from edge.board import detect_board, load_board_profiles  # noqa: PLC0415

    detection = detect_board(load_board_profiles(), root=root)
    name = detection.profile.name if detection.profile else "unknown"
    click.echo(f"{name}\t{detection.reason}")
    return 0 if detection.profile else 1


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


if __name__ == "__main__":
    sys.exit(main())
