"""What became of the update recorded before a reboot: the pure decision, then the same read
from ``pending.json``, ``last-boot.json`` and a stand-in ``rauc`` (captured rauc 1.8 output)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.errors import MoltbotError
from edge.update.outcome import UpdateResult, decide, previous_update_outcome, recheck
from edge.update.rauc import RaucClient
from edge.update.records import (
    BootVerdict,
    PendingUpdate,
    read_pending,
    write_boot_verdict,
    write_pending,
)
from tests.support.rauc import (
    FW_ENV_MARKED_GOOD,
    FW_ENV_ON_TRIAL,
    FW_ENV_ROLLED_BACK,
    STATUS_BOOTED_B,
    FakeTools,
    status_booted_a_after_rollback,
)

SHA = "ab" * 32
PENDING = PendingUpdate(
    from_slot="rootfs.0",
    to_slot="rootfs.1",
    version="2.0.0",
    sha256=SHA,
    recorded_at="2026-12-05T04:29:31Z",
    boot_id="boot-install",
)


def verdict(
    slot: str, result: str, boot_id: str, reason: str = "all 3 checks passed"
) -> BootVerdict:
    return BootVerdict(
        slot=slot,
        bootname="B" if slot == "rootfs.1" else "A",
        verdict=result,
        reason=reason,
        boot_id=boot_id,
        decided_at="2026-12-05T04:35:00Z",
    )


def test_booted_in_the_new_slot_with_the_gate_s_good_verdict_of_this_boot_is_installed() -> None:
    outcome = decide(
        PENDING,
        "rootfs.1",
        verdict("rootfs.1", "mark-good", "boot-2"),
        boot_id="boot-2",
        boot_attempts=3,
    )
    assert outcome.result is UpdateResult.INSTALLED
    assert outcome.settled
    event = outcome.event()
    assert (event["result"], event["version"], event["slot"]) == ("installed", "2.0.0", "rootfs.1")
    assert "reason" not in event


def test_booted_in_the_new_slot_before_the_gate_decided_is_on_trial_not_installed() -> None:
    """The appliance starts before moltbot-confirm-boot: no verdict of this boot yet."""
    stale = verdict("rootfs.0", "already-good", "boot-install")
    for last in (None, stale):
        outcome = decide(PENDING, "rootfs.1", last, boot_id="boot-2", boot_attempts=3)
        assert outcome.result is UpdateResult.ON_TRIAL
        assert not outcome.settled


def test_a_good_verdict_of_an_earlier_boot_does_not_install() -> None:
    old = verdict("rootfs.1", "mark-good", "boot-older")
    outcome = decide(PENDING, "rootfs.1", old, boot_id="boot-2", boot_attempts=3)
    assert outcome.result is UpdateResult.ON_TRIAL


def test_a_slot_rauc_reports_confirmed_is_installed_without_the_gate_s_file() -> None:
    outcome = decide(PENDING, "rootfs.1", None, boot_id="boot-2", boot_attempts=3, confirmed=True)
    assert outcome.result is UpdateResult.INSTALLED


def test_back_in_the_old_slot_after_the_gate_failed_says_the_gate_s_reason() -> None:
    failed = verdict(
        "rootfs.1", "mark-bad", "boot-2", reason="still failing after 600 s: service: HTTP 503"
    )
    outcome = decide(PENDING, "rootfs.0", failed, boot_id="boot-3", boot_attempts=3)
    assert outcome.result is UpdateResult.ROLLED_BACK
    event = outcome.event()
    assert event["result"] == "rolled_back"
    assert event["slot"] == "rootfs.0"
    assert event["reason"] == (
        "the health gate marked rootfs.1 bad: still failing after 600 s: service: HTTP 503"
    )


def test_back_in_the_old_slot_without_a_verdict_blames_the_boot_attempts() -> None:
    """The new slot never got as far as confirm-boot: U-Boot ran out of attempts."""
    last_before_reboot = verdict("rootfs.0", "mark-good", "boot-install")
    for last in (None, last_before_reboot):
        outcome = decide(PENDING, "rootfs.0", last, boot_id="boot-5", boot_attempts=3)
        assert outcome.result is UpdateResult.ROLLED_BACK
        assert outcome.reason == "the new slot did not come up within 3 attempts"


def test_the_old_slot_in_the_boot_that_installed_is_not_a_rollback() -> None:
    """Installed with reboot: false, or the appliance restarted before the reboot."""
    outcome = decide(PENDING, "rootfs.0", None, boot_id="boot-install", boot_attempts=3)
    assert outcome.result is UpdateResult.NOT_REBOOTED
    assert not outcome.settled


def test_a_third_slot_is_reported_as_unknown_and_settled() -> None:
    outcome = decide(PENDING, "rootfs.2", None, boot_id="boot-2", boot_attempts=3)
    assert outcome.result is UpdateResult.UNKNOWN
    assert outcome.settled
    assert "neither" in (outcome.reason or "")


@pytest.fixture
def tools(tmp_path: Path) -> FakeTools:
    return FakeTools(tmp_path / "bin")


def client(tools: FakeTools, status: str, fw_env: str) -> RaucClient:
    return RaucClient(
        rauc=tools.tool("rauc", {"args": ["status", "--detailed"], "stdout": status}),
        fw_printenv=tools.tool("fw_printenv", {"args": [], "stdout": fw_env}),
    )


def test_without_pending_json_rauc_is_not_even_asked(tools: FakeTools, tmp_path: Path) -> None:
    rauc = client(tools, STATUS_BOOTED_B, FW_ENV_ON_TRIAL)
    assert previous_update_outcome(rauc, tmp_path / "updates", boot_attempts=3) is None
    assert tools.calls() == []


def test_a_rollback_is_read_from_the_files_and_rauc_and_pending_json_is_removed(
    tools: FakeTools, tmp_path: Path
) -> None:
    updates = tmp_path / "updates"
    write_pending(updates, PENDING)
    write_boot_verdict(
        updates, verdict("rootfs.1", "mark-bad", "boot-2", reason="system: degraded")
    )
    rauc = client(tools, status_booted_a_after_rollback(), FW_ENV_ROLLED_BACK)
    outcome = previous_update_outcome(rauc, updates, boot_attempts=3, boot_id="boot-3")
    assert outcome is not None
    assert outcome.result is UpdateResult.ROLLED_BACK
    assert outcome.reason == "the health gate marked rootfs.1 bad: system: degraded"
    assert read_pending(updates) is None
    assert [call[:2] for call in tools.calls()] == [
        ["rauc", "status"],
        ["fw_printenv", "BOOT_B_LEFT"],
    ]


def test_on_trial_keeps_pending_json_and_a_recheck_settles_it_once_the_gate_wrote(
    tools: FakeTools, tmp_path: Path
) -> None:
    updates = tmp_path / "updates"
    write_pending(updates, PENDING)
    rauc = client(tools, STATUS_BOOTED_B, FW_ENV_ON_TRIAL)
    outcome = previous_update_outcome(rauc, updates, boot_attempts=3, boot_id="boot-2")
    assert outcome is not None and outcome.result is UpdateResult.ON_TRIAL
    assert read_pending(updates) == PENDING
    assert recheck(outcome, updates, boot_attempts=3, boot_id="boot-2").result is (
        UpdateResult.ON_TRIAL
    )
    write_boot_verdict(updates, verdict("rootfs.1", "mark-good", "boot-2"))
    calls = len(tools.calls())
    settled = recheck(outcome, updates, boot_attempts=3, boot_id="boot-2")
    assert settled.result is UpdateResult.INSTALLED
    assert read_pending(updates) is None
    assert len(tools.calls()) == calls, "a recheck reads the file, not rauc"


def test_a_new_slot_with_all_its_attempts_back_is_installed_at_start(
    tools: FakeTools, tmp_path: Path
) -> None:
    """The appliance restarted after the gate marked the slot good (attempts reset to 3)."""
    updates = tmp_path / "updates"
    write_pending(updates, PENDING)
    rauc = client(tools, STATUS_BOOTED_B, FW_ENV_MARKED_GOOD)
    outcome = previous_update_outcome(rauc, updates, boot_attempts=3, boot_id="boot-2")
    assert outcome is not None and outcome.result is UpdateResult.INSTALLED


def test_unknown_attempts_are_not_taken_for_a_confirmed_slot(
    tools: FakeTools, tmp_path: Path
) -> None:
    """The appliance may not read the U-Boot env (no access to the device): still on trial."""
    updates = tmp_path / "updates"
    write_pending(updates, PENDING)
    rauc = client(tools, STATUS_BOOTED_B, "")
    tools.tool("fw_printenv", {"args": [], "stderr": "Cannot access MTD device", "rc": 1})
    outcome = previous_update_outcome(rauc, updates, boot_attempts=3, boot_id="boot-2")
    assert outcome is not None and outcome.result is UpdateResult.ON_TRIAL


def test_a_damaged_pending_json_is_an_error_that_names_the_file(tmp_path: Path) -> None:
    updates = tmp_path / "updates"
    updates.mkdir()
    (updates / "pending.json").write_text(json.dumps({"from_slot": "rootfs.0"}))
    with pytest.raises(MoltbotError, match=r"pending\.json lacks a field") as caught:
        read_pending(updates)
    assert caught.value.where == str(updates / "pending.json")
