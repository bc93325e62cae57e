"""Whether a freshly updated slot may stay: run the health checks, decide good or bad.

After the bootloader tries a new slot, the slot is on trial (RAUC's U-Boot scheme counts
``BOOT_<x>_LEFT`` down; see ``SlotsReport.awaiting_confirmation``). The gate runs the checks it
is given — the appliance answers ``/healthz``, the active model reproduces its reference
outputs, no systemd unit failed — each round until all pass in the same round (mark good) or
the deadline passes (mark bad and reboot into the old slot). A check that reports a ``final``
failure (a wrong inference result will not fix itself) decides at once.

Pure logic: the checks, the clock, sleeping and marking are callables passed in, so the
decision is tested without a bootloader. A check receives the seconds left before the deadline
and must return by then (give it its own timeouts); one that raises has failed, and the outcome
says how.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge.text_enum import TextEnum

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckResult:
    """One check's answer; ``final`` marks a failure that no retry will change."""

    passed: bool
    detail: str
    final: bool = False


@dataclass(frozen=True)
class HealthCheck:
    """A named check; ``run`` gets the seconds left before the gate's deadline."""

    name: str
    run: Callable[[float], CheckResult]


class Verdict(TextEnum):
    ALREADY_GOOD = "already-good"
    MARK_GOOD = "mark-good"
    MARK_BAD = "mark-bad"
    # Failed, but the slot was not booted for an update: neither marked nor left (see
    # edge.update.confirm); U-Boot falls back after its attempts if it is never confirmed.
    LEFT_ON_TRIAL = "left-on-trial"


@dataclass(frozen=True)
class CheckRecord:
    """A check's last answer and how often it ran."""

    name: str
    passed: bool
    detail: str
    runs: int


@dataclass(frozen=True)
class GateOutcome:
    """What the gate decided about ``slot``, and why (one line for the journal)."""

    verdict: Verdict
    slot: str
    reason: str
    checks: tuple[CheckRecord, ...] = ()
    elapsed_s: float = 0.0

    @property
    def reboot(self) -> bool:
        """A slot marked bad is left at once: the bootloader starts the old one."""
        return self.verdict is Verdict.MARK_BAD


def run_health_gate(
    slot: str,
    *,
    awaiting_confirmation: bool,
    checks: Sequence[HealthCheck],
    deadline_s: float,
    interval_s: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> GateOutcome:
    """Run ``checks`` in rounds until all pass in one round, one fails for good, or time is up."""
    if not awaiting_confirmation:
        return GateOutcome(Verdict.ALREADY_GOOD, slot, f"slot {slot} is not on trial")
    if not checks:
        raise ValueError("a health gate without checks would pass any slot")
    start = clock()
    runs = {check.name: 0 for check in checks}
    while True:
        results: dict[str, CheckResult] = {}
        for check in checks:
            runs[check.name] += 1
            results[check.name] = _run_check(check, deadline_s - (clock() - start))
            if _fails_for_good(results[check.name]):
                return _outcome(Verdict.MARK_BAD, slot, results, runs, clock() - start, check.name)
        elapsed = clock() - start
        if all(result.passed for result in results.values()):
            return _outcome(Verdict.MARK_GOOD, slot, results, runs, elapsed)
        if elapsed + interval_s > deadline_s:
            return _outcome(Verdict.MARK_BAD, slot, results, runs, elapsed)
        failing = ", ".join(name for name, result in results.items() if not result.passed)
        logger.info("health gate for %s: waiting on %s (%.0f s so far)", slot, failing, elapsed)
        sleep(interval_s)


def apply_outcome(
    outcome: GateOutcome,
    *,
    mark_good: Callable[[], None],
    mark_bad: Callable[[], None],
    reboot: Callable[[], None],
) -> None:
    """Mark the slot as decided; after ``mark_bad`` reboot even if marking failed.

    If the bootloader environment cannot be written, rebooting still leaves the slot: U-Boot
    counts its attempts down and falls back to the old slot; the marking error is raised after
    the reboot was asked for, so it is logged, not lost.
    """
    logger.info("health gate: %s %s: %s", outcome.verdict, outcome.slot, outcome.reason)
    if outcome.verdict is Verdict.MARK_GOOD:
        mark_good()
    elif outcome.verdict is Verdict.MARK_BAD:
        try:
            mark_bad()
        finally:
            reboot()


def _run_check(check: HealthCheck, remaining_s: float) -> CheckResult:
    try:
        return check.run(max(remaining_s, 0.0))
    except Exception as exc:  # noqa: BLE001 - a check that crashes has failed; the outcome says how
        logger.warning("health check %s raised %r", check.name, exc)
        return CheckResult(False, f"raised {type(exc).__name__}: {exc}")


def _fails_for_good(result: CheckResult) -> bool:
    return not result.passed and result.final


def _outcome(
    verdict: Verdict,
    slot: str,
    results: dict[str, CheckResult],
    runs: dict[str, int],
    elapsed_s: float,
    decided_by: str | None = None,
) -> GateOutcome:
    records = tuple(
        CheckRecord(name, result.passed, result.detail, runs[name])
        for name, result in results.items()
    )
    failed = [f"{r.name}: {r.detail}" for r in records if not r.passed]
    if verdict is Verdict.MARK_GOOD:
        reason = f"all {len(records)} checks passed in {elapsed_s:.0f} s"
    elif decided_by is not None:
        reason = f"{decided_by} failed for good: {results[decided_by].detail}"
    else:
        reason = f"still failing after {elapsed_s:.0f} s: {'; '.join(failed)}"
    return GateOutcome(verdict, slot, reason, records, elapsed_s)
