"""``moltbot system confirm-boot``: keep the booted slot if it is healthy, else leave it.

Run at every boot by ``moltbot-confirm-boot.service`` after the appliance started. On a system
without RAUC (no ``system.conf``) it does nothing. Otherwise it reads ``rauc status``; if the
booted slot is on trial (U-Boot counted an attempt down, or calls it bad) it runs the health
gate, writes the verdict to ``last-boot.json`` — before marking, so that the reason survives the
reboot — then marks the slot good, or bad and reboots into the other slot.

Marked bad is only a slot booted for an update (``pending.json`` names it, written in an earlier
boot). U-Boot counts an attempt down at every boot, so every boot is "on trial"; a check that
fails for a reason both slots share (a model on the data partition without reference outputs, a
failed unit of the site's) would otherwise send the device from one slot to the other forever.
Such a slot is left unconfirmed instead (``left-on-trial``), and the command fails.

The checks come from the caller (the self-test's, built in ``edge.update_jobs``); the RAUC
client, the reboot, the clock and the boot id are arguments, so tests drive it with stand-ins.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Protocol

from edge.update.errors import BootStateError
from edge.update.health_gate import (
    GateOutcome,
    HealthCheck,
    Verdict,
    apply_outcome,
    run_health_gate,
)
from edge.update.rauc import SlotsReport
from edge.update.records import (
    BootVerdict,
    PendingUpdate,
    current_boot_id,
    read_pending,
    wall_time_iso,
    write_boot_verdict,
)

logger = logging.getLogger(__name__)

# Where RAUC looks for its system.conf when no --conf is given (rauc's config_file.c).
RAUC_SYSTEM_CONFS = (
    Path("/etc/rauc/system.conf"),
    Path("/run/rauc/system.conf"),
    Path("/usr/lib/rauc/system.conf"),
)
NO_SLOTS = "no A/B slots here"


class BootMarker(Protocol):
    """What confirming a boot needs of RAUC (``RaucClient`` has this shape)."""

    def status(self) -> SlotsReport: ...

    def mark_good(self, slot: str = "booted") -> None: ...

    def mark_bad(self, slot: str = "booted") -> None: ...


def rauc_system_conf(configured: Path | None) -> Path | None:
    """The system.conf RAUC would read (``configured``, else its default places); ``None``
    when there is none: this system has no A/B slots."""
    candidates = (configured,) if configured is not None else RAUC_SYSTEM_CONFS
    return next((path for path in candidates if path.is_file()), None)


def confirm_boot(
    rauc: BootMarker,
    checks: Callable[[], Sequence[HealthCheck]],
    updates_dir: Path,
    *,
    attempts_max: int,
    deadline_s: float,
    reboot: Callable[[], None],
    boot_id: str | None = None,
    interval_s: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> BootVerdict:
    """Gate the booted slot; return the verdict written to ``last-boot.json``.

    ``checks`` is called only when the slot is on trial. A slot that cannot be marked raises
    ``BootStateError`` (after the reboot was asked for, if it was to be marked bad); the error is
    in ``last-boot.json`` too.
    """
    report = rauc.status()
    for problem in report.problems:
        logger.warning("rauc status: %s", problem)
    slot = report.booted_slot()
    if slot is None:
        raise BootStateError(
            f"rauc status names no booted slot (booted: {report.booted!r})",
            hint="the kernel command line needs rauc.slot=<bootname> (set by the boot script)",
        )
    awaiting = report.awaiting_confirmation(attempts_max)
    this_boot = boot_id or current_boot_id()
    outcome = run_health_gate(
        slot.name,
        awaiting_confirmation=awaiting,
        checks=checks() if awaiting else (),
        deadline_s=deadline_s,
        interval_s=interval_s,
        clock=clock,
        sleep=sleep,
    )
    if outcome.verdict is Verdict.MARK_BAD and not _booted_for_update(
        read_pending(updates_dir), slot.name, this_boot
    ):
        outcome = replace(
            outcome,
            verdict=Verdict.LEFT_ON_TRIAL,
            reason=f"{outcome.reason}; not marked bad: {slot.name} was not booted for an update, "
            "so the failure is not the slot's (data partition, models, site config?); "
            f"U-Boot leaves it after {attempts_max} unconfirmed boots",
        )
    verdict = _verdict(outcome, slot.bootname, this_boot)
    write_boot_verdict(updates_dir, verdict)
    try:
        apply_outcome(outcome, mark_good=rauc.mark_good, mark_bad=rauc.mark_bad, reboot=reboot)
    except BootStateError as exc:
        verdict = replace(verdict, error=exc.what)
        write_boot_verdict(updates_dir, verdict)
        raise
    return verdict


def _booted_for_update(pending: PendingUpdate | None, slot: str, boot_id: str) -> bool:
    """This boot is the first try of a slot an update installed (``pending.json`` says so)."""
    return pending is not None and pending.to_slot == slot and pending.boot_id != boot_id


def _verdict(outcome: GateOutcome, bootname: str | None, boot_id: str) -> BootVerdict:
    return BootVerdict(
        slot=outcome.slot,
        bootname=bootname,
        verdict=outcome.verdict.value,
        reason=outcome.reason,
        boot_id=boot_id,
        decided_at=wall_time_iso(),
        checks=tuple(asdict(check) for check in outcome.checks),
    )


def verdict_lines(verdict: BootVerdict) -> list[str]:
    """One line per check, then the decision (what the CLI prints)."""
    lines = [
        f"{'ok' if check['passed'] else 'FAIL'} {check['name']}: {check['detail']}"
        for check in verdict.checks
    ]
    decision = {
        Verdict.ALREADY_GOOD.value: f"{verdict.slot} is not on trial: nothing to confirm",
        Verdict.MARK_GOOD.value: f"{verdict.slot} marked good: {verdict.reason}",
        Verdict.MARK_BAD.value: f"{verdict.slot} marked bad, rebooting: {verdict.reason}",
        Verdict.LEFT_ON_TRIAL.value: f"{verdict.slot} not confirmed: {verdict.reason}",
    }
    lines.append(decision.get(verdict.verdict, verdict.reason))
    return lines
