"""The health gate's decision about a freshly booted slot, with checks, clock and sleep passed
in: no bootloader, no waiting."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from edge.update.health_gate import (
    CheckResult,
    GateOutcome,
    HealthCheck,
    Verdict,
    apply_outcome,
    run_health_gate,
)


class FakeClock:
    """Time that moves only when the gate sleeps (or a check says it took a while)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def answers(*results: CheckResult) -> Callable[[float], CheckResult]:
    """A check that gives these answers in turn, then repeats the last one."""
    queue: Iterator[CheckResult] = iter(results)
    last = results[-1]

    def run(_remaining_s: float) -> CheckResult:
        nonlocal last
        last = next(queue, last)
        return last

    return run


OK = CheckResult(True, "ok")
DOWN = CheckResult(False, "connection refused")


def gate(clock: FakeClock, *checks: HealthCheck, deadline_s: float = 60.0) -> GateOutcome:
    return run_health_gate(
        "rootfs.1",
        awaiting_confirmation=True,
        checks=checks,
        deadline_s=deadline_s,
        interval_s=5.0,
        clock=clock,
        sleep=clock.sleep,
    )


def test_a_slot_whose_checks_all_pass_is_marked_good_without_waiting() -> None:
    clock = FakeClock()
    outcome = gate(
        clock,
        HealthCheck("service", answers(OK)),
        HealthCheck("reference inference", answers(CheckResult(True, "defect@1 matches"))),
        HealthCheck("failed units", answers(OK)),
    )
    assert outcome.verdict is Verdict.MARK_GOOD
    assert not outcome.reboot
    assert outcome.reason == "all 3 checks passed in 0 s"
    assert clock.sleeps == []


def test_a_service_that_comes_up_late_within_the_deadline_passes() -> None:
    clock = FakeClock()
    outcome = gate(clock, HealthCheck("service", answers(DOWN, DOWN, OK)))
    assert outcome.verdict is Verdict.MARK_GOOD
    assert clock.sleeps == [5.0, 5.0]
    assert outcome.checks[0].runs == 3


def test_a_check_still_failing_at_the_deadline_marks_the_slot_bad_with_its_reason() -> None:
    clock = FakeClock()
    outcome = gate(
        clock,
        HealthCheck("service", answers(OK)),
        HealthCheck("failed units", answers(CheckResult(False, "moltbot.service failed"))),
        deadline_s=30.0,
    )
    assert outcome.verdict is Verdict.MARK_BAD
    assert outcome.reboot
    assert outcome.reason == "still failing after 30 s: failed units: moltbot.service failed"
    assert clock.now <= 30.0


def test_all_checks_must_pass_in_the_same_round() -> None:
    """A service that flaps (up, then down) while the other check recovers is not good."""
    clock = FakeClock()
    outcome = gate(
        clock,
        HealthCheck("service", answers(OK, DOWN, DOWN, DOWN)),
        HealthCheck("reference inference", answers(DOWN, OK)),
        deadline_s=12.0,
    )
    assert outcome.verdict is Verdict.MARK_BAD
    assert "service: connection refused" in outcome.reason


def test_a_final_failure_decides_at_once_without_waiting_for_the_deadline() -> None:
    clock = FakeClock()
    wrong = CheckResult(False, "defect@1 output differs by 0.4", final=True)
    outcome = gate(
        clock,
        HealthCheck("reference inference", answers(wrong)),
        HealthCheck("service", answers(OK)),
    )
    assert outcome.verdict is Verdict.MARK_BAD
    assert outcome.reason == "reference inference failed for good: defect@1 output differs by 0.4"
    assert clock.sleeps == []
    assert [record.name for record in outcome.checks] == ["reference inference"]


def test_a_check_that_raises_has_failed_and_the_outcome_says_how() -> None:
    def broken(_remaining_s: float) -> CheckResult:
        raise ConnectionError("no route to host")

    clock = FakeClock()
    outcome = gate(clock, HealthCheck("service", broken), deadline_s=4.0)
    assert outcome.verdict is Verdict.MARK_BAD
    assert "service: raised ConnectionError: no route to host" in outcome.reason


def test_each_check_is_told_the_time_left_before_the_deadline() -> None:
    clock = FakeClock()
    budgets: list[float] = []

    def slow(remaining_s: float) -> CheckResult:
        budgets.append(remaining_s)
        clock.now += 7.0
        return DOWN

    gate(clock, HealthCheck("service", slow), deadline_s=30.0)
    assert budgets == [30.0, 18.0, 6.0]


def test_a_slot_not_on_trial_is_left_alone() -> None:
    ran: list[float] = []

    def service(remaining_s: float) -> CheckResult:
        ran.append(remaining_s)
        return OK

    outcome = run_health_gate(
        "rootfs.0",
        awaiting_confirmation=False,
        checks=[HealthCheck("service", service)],
        deadline_s=10,
    )
    assert outcome.verdict is Verdict.ALREADY_GOOD
    assert ran == []
    assert not outcome.reboot


def test_a_gate_without_checks_is_refused() -> None:
    with pytest.raises(ValueError, match="without checks"):
        run_health_gate("rootfs.1", awaiting_confirmation=True, checks=[], deadline_s=10)


def test_applying_good_marks_good_and_does_not_reboot() -> None:
    calls: list[str] = []
    apply_outcome(
        GateOutcome(Verdict.MARK_GOOD, "rootfs.1", "ok"),
        mark_good=lambda: calls.append("good"),
        mark_bad=lambda: calls.append("bad"),
        reboot=lambda: calls.append("reboot"),
    )
    assert calls == ["good"]


def test_applying_bad_reboots_even_when_marking_fails_and_still_raises() -> None:
    calls: list[str] = []

    def mark_bad() -> None:
        calls.append("bad")
        raise RuntimeError("fw_setenv: cannot open /dev/mmcblk0boot1")

    with pytest.raises(RuntimeError, match="fw_setenv"):
        apply_outcome(
            GateOutcome(Verdict.MARK_BAD, "rootfs.1", "service down"),
            mark_good=lambda: calls.append("good"),
            mark_bad=mark_bad,
            reboot=lambda: calls.append("reboot"),
        )
    assert calls == ["bad", "reboot"]


def test_applying_already_good_does_nothing() -> None:
    calls: list[str] = []
    apply_outcome(
        GateOutcome(Verdict.ALREADY_GOOD, "rootfs.0", "not on trial"),
        mark_good=lambda: calls.append("good"),
        mark_bad=lambda: calls.append("bad"),
        reboot=lambda: calls.append("reboot"),
    )
    assert calls == []
