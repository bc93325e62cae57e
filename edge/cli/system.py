"""``moltbot system …``: device-side operating-system steps run by the image's units."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from edge.cli.context import CliState


@click.group()
def system() -> None:
    """First-boot setup and the on-device self-test (run by the image's systemd units)."""


@system.command("setup")
@click.option(
    "--root",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("/"),
    show_default=True,
    help="Root of the system to configure (for testing on a copy).",
)
@click.option("--no-grow", is_flag=True, help="Do not grow the data partition.")
@click.pass_obj
def system_setup(state: CliState, root: Path, no_grow: bool) -> int:
    """Apply the site config: grow data, device id + API token, host name, Wi-Fi, SSH keys."""
    from edge.system_setup import run_setup  # noqa: PLC0415

    report = run_setup(state.loaded().config, root, grow=not no_grow)
    for name, outcome in report.steps.items():
        click.echo(f"{name}: {outcome}")
    return 1 if report.failed else 0


@system.command("selftest")
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=300.0,
    show_default=True,
    help="Seconds to wait for the appliance to answer.",
)
@click.pass_obj
def system_selftest(state: CliState, timeout_s: float) -> int:
    """Health, readiness and the active model's reference outputs; exit 1 on any failure."""
    from edge.selftest import run_selftest  # noqa: PLC0415

    report = run_selftest(state.loaded().config, timeout_s=timeout_s, emit=click.echo)
    return 0 if report.passed else 1
