"""``moltbot doctor``, ``run``, ``config …`` and ``board …``: the device itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from edge.cli.context import CliState


@click.command()
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


@click.command()
@click.pass_obj
def run(state: CliState) -> int:
    """Run the appliance: model, triggers, outbox + MQTT uplink and the local API."""
    from edge.service import run_appliance  # noqa: PLC0415

    return run_appliance(state.loaded().config)


@click.group()
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


@click.group()
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
