"""What became of the update recorded before the last reboot: installed, or rolled back.

At its start the appliance compares the slot it booted with ``pending.json``
(:func:`previous_update_outcome`): booted in the update's slot and the health gate of this
boot said good → ``installed``; booted in the slot the update left (in a later boot) →
``rolled_back``, with the gate's reason if it marked the new slot bad, else because U-Boot
ran out of attempts. While the new slot is still on trial (``moltbot-confirm-boot`` runs after
the appliance has started) the outcome is ``on_trial`` and :func:`recheck` settles it from
``last-boot.json`` once the gate has written it. A settled outcome removes ``pending.json``.

:func:`decide` is the pure decision; the rest reads the files and ``rauc status``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edge.text_enum import TextEnum
from edge.update.rauc import SlotsReport
from edge.update.records import (
    BootVerdict,
    PendingUpdate,
    current_boot_id,
    read_boot_verdict,
    read_pending,
    remove_pending,
)

logger = logging.getLogger(__name__)


class SlotStatus(Protocol):
    def status(self) -> SlotsReport: ...


class UpdateResult(TextEnum):
    INSTALLED = "installed"
    ROLLED_BACK = "rolled_back"
    UNKNOWN = "unknown"  # booted in neither slot of the update: reported, then forgotten
    ON_TRIAL = "on_trial"  # in the new slot, the health gate has not decided yet
    NOT_REBOOTED = "not_rebooted"  # still the boot that installed it (e.g. --no-reboot)


SETTLED = frozenset({UpdateResult.INSTALLED, UpdateResult.ROLLED_BACK, UpdateResult.UNKNOWN})


@dataclass(frozen=True)
class UpdateOutcome:
    result: UpdateResult
    pending: PendingUpdate
    booted_slot: str | None
    reason: str | None = None

    @property
    def settled(self) -> bool:
        """An answer to report (and ``pending.json`` to remove)."""
        return self.result in SETTLED

    def event(self) -> dict[str, Any]:
        """The payload of the ``update`` event that reports it."""
        payload: dict[str, Any] = {
            "result": self.result.value,
            "version": self.pending.version,
            "slot": self.booted_slot,
            "from_slot": self.pending.from_slot,
            "to_slot": self.pending.to_slot,
            "sha256": self.pending.sha256,
            "installed_at": self.pending.recorded_at,
        }
        if self.reason is not None:
            payload["reason"] = self.reason
        return payload


def decide(
    pending: PendingUpdate,
    booted_slot: str | None,
    verdict: BootVerdict | None,
    *,
    boot_id: str,
    boot_attempts: int,
    confirmed: bool = False,
) -> UpdateOutcome:
    """The outcome of ``pending`` for a device booted in ``booted_slot`` in boot ``boot_id``.

    ``verdict`` is ``last-boot.json``; ``confirmed``: RAUC says the booted slot has all its
    attempts (marked good, also without the gate, e.g. ``rauc status mark-good`` by hand).
    """
    if booted_slot == pending.to_slot:
        gate_said_good = (
            verdict is not None
            and verdict.boot_id == boot_id
            and verdict.slot == booted_slot
            and verdict.good
        )
        if gate_said_good or confirmed:
            return UpdateOutcome(UpdateResult.INSTALLED, pending, booted_slot)
        return UpdateOutcome(UpdateResult.ON_TRIAL, pending, booted_slot)
    if booted_slot == pending.from_slot:
        if boot_id == pending.boot_id:
            return UpdateOutcome(UpdateResult.NOT_REBOOTED, pending, booted_slot)
        return UpdateOutcome(
            UpdateResult.ROLLED_BACK,
            pending,
            booted_slot,
            _rollback_reason(pending, verdict, boot_attempts),
        )
    return UpdateOutcome(
        UpdateResult.UNKNOWN,
        pending,
        booted_slot,
        f"booted in {booted_slot or 'an unknown slot'}, neither the update's slot "
        f"{pending.to_slot} nor {pending.from_slot} it left",
    )


def _rollback_reason(pending: PendingUpdate, verdict: BootVerdict | None, attempts: int) -> str:
    """The health gate's reason if it marked the new slot bad after the update, else U-Boot's."""
    if (
        verdict is not None
        and verdict.slot == pending.to_slot
        and verdict.boot_id != pending.boot_id
        and not verdict.good
    ):
        return f"the health gate marked {pending.to_slot} bad: {verdict.error or verdict.reason}"
    return f"the new slot did not come up within {attempts} attempts"


def previous_update_outcome(
    rauc: SlotStatus,
    updates_dir: Path,
    *,
    boot_attempts: int,
    boot_id: str | None = None,
) -> UpdateOutcome | None:
    """``None`` without ``pending.json`` (``rauc`` is then not asked); else the outcome."""
    pending = read_pending(updates_dir)
    if pending is None:
        return None
    report = rauc.status()
    booted = report.booted_slot()
    confirmed = (
        booted is not None
        and booted.attempts_left is not None
        and not report.awaiting_confirmation(boot_attempts)
    )
    outcome = decide(
        pending,
        booted.name if booted else None,
        read_boot_verdict(updates_dir),
        boot_id=boot_id or current_boot_id(),
        boot_attempts=boot_attempts,
        confirmed=confirmed,
    )
    return _settle(outcome, updates_dir)


def recheck(
    outcome: UpdateOutcome, updates_dir: Path, *, boot_attempts: int, boot_id: str | None = None
) -> UpdateOutcome:
    """Decide an ``on_trial`` outcome again from ``last-boot.json`` (no ``rauc`` call)."""
    again = decide(
        outcome.pending,
        outcome.booted_slot,
        read_boot_verdict(updates_dir),
        boot_id=boot_id or current_boot_id(),
        boot_attempts=boot_attempts,
    )
    return _settle(again, updates_dir)


def _settle(outcome: UpdateOutcome, updates_dir: Path) -> UpdateOutcome:
    if outcome.settled:
        remove_pending(updates_dir)
        logger.info("update %s: %s", outcome.pending.version, outcome.result.value)
    return outcome
