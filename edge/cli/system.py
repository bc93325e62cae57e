"""``moltbot system …``: device-side operating-system steps run by the image's units, and
over-the-air updates of the A/B root file systems (RAUC)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from edge.cli.context import CliState
    from edge.update.rauc import SlotsReport

logger = logging.getLogger(__name__)


@click.group()
def system() -> None:
    """First-boot setup, the on-device self-test, A/B updates, their slots and boot check."""


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


@system.command("update")
@click.argument("source", metavar="BUNDLE|URL")
@click.option(
    "--sha256",
    required=True,
    help="The bundle's sha256 (64 hex digits, from its SHA256SUMS); anything else is refused.",
)
@click.option("--no-reboot", is_flag=True, help="Install, but leave the reboot to you.")
@click.pass_obj
def system_update(state: CliState, source: str, sha256: str, no_reboot: bool) -> int:
    """Fetch a RAUC bundle (resumable), install it into the other slot, reboot into it.

    The bundle is kept in updates.dir ({device.data_dir}/updates) until it is installed; so is
    pending.json, from which the appliance reports the update at its next start. After the reboot
    the new slot is on trial until its health gate marks it good; if it never does, the
    bootloader falls back to the slot running now.
    """
    from edge import wiring  # noqa: PLC0415
    from edge.update.download import RetryPolicy  # noqa: PLC0415
    from edge.update.install import install_update, reboot_system  # noqa: PLC0415

    config = state.loaded().config
    settings = config.updates
    result = install_update(
        source,
        sha256,
        config.paths().updates_dir,
        wiring.rauc_client(config),
        emit=click.echo,
        retry=RetryPolicy(
            attempts=settings.download_attempts, timeout_s=settings.download_timeout_s
        ),
        margin_bytes=settings.free_space_margin_mb * 2**20,
    )
    click.echo(f"installed version {result.bundle.version}; next boot: {result.next_slot}")
    if no_reboot:
        click.echo("not rebooting (--no-reboot): reboot to start the new version")
        return 0
    click.echo("rebooting into the new slot")
    reboot_system()
    return 0


@system.command("slots")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def system_slots(state: CliState, as_json: bool) -> int:
    """The A/B slots: which one runs, which boots next, boot status, attempts left, version."""
    from edge import wiring  # noqa: PLC0415

    report = wiring.rauc_client(state.loaded().config).status()
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
        return 0
    for line in _slot_lines(report):
        click.echo(line)
    for problem in report.problems:
        click.echo(f"warning: {problem}", err=True)
    return 0


@system.command("confirm-boot")
@click.pass_obj
def system_confirm_boot(state: CliState) -> int:
    """Keep the booted slot if it is healthy, else mark it bad and reboot into the other one.

    Run at every boot by moltbot-confirm-boot.service. On a slot on trial (U-Boot counted an
    attempt down) it waits for the appliance to be ready, checks the active model's reference
    outputs and that no systemd unit failed (updates.health_gate_deadline_s at most), then marks
    the slot good — or bad and reboots, if the slot was booted for an update. The verdict goes to
    {updates dir}/last-boot.json. Without RAUC (no system.conf) it does nothing. Exit 1 when the
    slot was not confirmed.
    """
    from edge import wiring  # noqa: PLC0415
    from edge.update.confirm import (  # noqa: PLC0415
        NO_SLOTS,
        confirm_boot,
        rauc_system_conf,
        verdict_lines,
    )
    from edge.update.install import reboot_system  # noqa: PLC0415
    from edge.update_jobs import boot_health_checks  # noqa: PLC0415

    config = state.loaded().config
    settings = config.updates
    if rauc_system_conf(settings.rauc_system_conf) is None:
        logger.info("%s: no RAUC system.conf, nothing to confirm", NO_SLOTS)
        return 0
    verdict = confirm_boot(
        wiring.rauc_client(config),
        lambda: boot_health_checks(config),
        config.paths().updates_dir,
        attempts_max=settings.boot_attempts,
        deadline_s=settings.health_gate_deadline_s,
        reboot=reboot_system,
    )
    for line in verdict_lines(verdict):
        click.echo(line)
    return 0 if verdict.good else 1


def _slot_lines(report: SlotsReport) -> list[str]:
    booted = report.booted_slot()
    lines = [
        f"compatible: {report.compatible}",
        f"booted:     {booted.name if booted else '?'} ({report.booted or '?'})",
        f"next boot:  {report.boot_primary or 'unknown'}",
        f"{'slot':<12} {'bootname':<9} {'state':<9} {'boot':<5} {'left':<5} version",
    ]
    for slot in report.slots:
        left = "-" if slot.attempts_left is None else str(slot.attempts_left)
        lines.append(
            f"{slot.name:<12} {slot.bootname or '-':<9} {slot.state:<9} "
            f"{slot.boot_status or '-':<5} {left:<5} {slot.bundle_version or '-'}"
        )
    return lines
