"""Update jobs of a running appliance: one at a time, every step an ``update`` event in a real
outbox, the reboot at a quiet moment; and the update before the last reboot reported at start.

RAUC is an in-process stand-in answering with captured rauc 1.8 output (``FakeRauc``): the real
one needs its D-Bus service. The bundle comes over HTTP from a local server. Nothing reboots.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge import wiring
from edge.config.model import UpdateSettings
from edge.outbox.store import Outbox
from edge.update.errors import NoSlotsError, UpdateBusyError
from edge.update.records import (
    BootVerdict,
    PendingUpdate,
    read_pending,
    write_boot_verdict,
    write_pending,
)
from edge.update.request import UpdateRequest
from edge.update_jobs import UpdateJobs
from tests.conftest import ConfigFactory
from tests.support.rauc import (
    STATUS_BOOTED_B,
    BundleServer,
    FakeRauc,
    serving,
    status_booted_a_after_rollback,
)

BUNDLE = b"stand-in bundle: FakeRauc never reads it" * 1000
SHA = hashlib.sha256(BUNDLE).hexdigest()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[BundleServer]:
    folder = tmp_path / "www"
    folder.mkdir()
    (folder / "v2.raucb").write_bytes(BUNDLE)
    with serving(folder) as running:
        yield running


@pytest.fixture
def outbox(make_config: ConfigFactory) -> Iterator[Outbox]:
    opened = wiring.open_outbox(make_config(), has_rtc=True)
    yield opened
    opened.close()


class Reboots:
    def __init__(self) -> None:
        self.at: list[float] = []

    def __call__(self) -> None:
        self.at.append(time.monotonic())


def jobs_for(
    tmp_path: Path,
    outbox: Outbox,
    rauc: FakeRauc,
    *,
    quiet: threading.Lock | None = None,
    reboots: Reboots | None = None,
    boot_id: str = "boot-1",
    **settings: Any,
) -> UpdateJobs:
    system_conf = tmp_path / "system.conf"
    system_conf.write_text("[system]\ncompatible=moltbot-test\nbootloader=uboot\n")
    return UpdateJobs(
        UpdateSettings(**({"rauc_system_conf": system_conf} | settings)),
        tmp_path / "updates",
        rauc,
        outbox,
        quiet=quiet or threading.Lock(),
        reboot=reboots or Reboots(),
        boot_id=lambda: boot_id,
        recheck_s=0.05,
    )


def update_events(outbox: Outbox) -> list[dict[str, Any]]:
    return [m.payload for m in outbox.peek(500) if m.kind == "update"]


def request(url: str, *, reboot: bool = True) -> UpdateRequest:
    return UpdateRequest.from_json({"url": url, "sha256": SHA, "reboot": reboot})


def test_a_job_reports_every_state_in_order_and_reboots_into_the_new_slot(
    tmp_path: Path, outbox: Outbox, server: BundleServer
) -> None:
    reboots = Reboots()
    jobs = jobs_for(tmp_path, outbox, FakeRauc(), reboots=reboots)
    first = jobs.start(request(server.url("v2.raucb")), requested_by="api")
    assert first["state"] == "queued"
    assert jobs.wait(30)
    events = update_events(outbox)
    assert {event["job"] for event in events} == {first["job"]}
    states = [event["state"] for event in events]
    assert states[0] == "queued" and states[-1] == "rebooting"
    assert states.index("downloading") < states.index("verifying") < states.index("installing")
    assert [e["percent"] for e in events if e["state"] == "downloading"][-1] == 100
    last = events[-1]
    assert (last["version"], last["slot"], last["error"]) == ("2.0.0", "rootfs.1", None)
    assert len(reboots.at) == 1
    pending = read_pending(tmp_path / "updates")
    assert pending is not None and pending.to_slot == "rootfs.1"
    assert jobs.report()["job"]["state"] == "rebooting"


def test_reboot_false_installs_and_leaves_the_reboot(
    tmp_path: Path, outbox: Outbox, server: BundleServer
) -> None:
    reboots = Reboots()
    jobs = jobs_for(tmp_path, outbox, FakeRauc(), reboots=reboots)
    jobs.start(request(server.url("v2.raucb"), reboot=False), requested_by="mqtt")
    assert jobs.wait(30)
    last = update_events(outbox)[-1]
    assert (last["state"], last["requested_by"]) == ("installed", "mqtt")
    assert "reboot: false" in last["message"]
    assert reboots.at == []


def test_one_update_at_a_time(tmp_path: Path, outbox: Outbox, server: BundleServer) -> None:
    hold = threading.Event()
    jobs = jobs_for(tmp_path, outbox, FakeRauc(hold=hold))
    first = jobs.start(request(server.url("v2.raucb"), reboot=False), requested_by="api")
    with pytest.raises(UpdateBusyError, match=f"update {first['job']} is still"):
        jobs.start(request(server.url("v2.raucb")), requested_by="mqtt")
    hold.set()
    assert jobs.wait(30)
    second = jobs.start(request(server.url("v2.raucb"), reboot=False), requested_by="mqtt")
    assert second["job"] != first["job"]
    assert jobs.wait(30)


def test_a_failed_download_is_a_failed_event_that_keeps_the_link_s_signature_private(
    tmp_path: Path, outbox: Outbox, server: BundleServer
) -> None:
    url = server.url("missing.raucb") + "?X-Amz-Signature=s3cr3t-signature"
    jobs = jobs_for(tmp_path, outbox, FakeRauc())
    jobs.start(request(url), requested_by="api")
    assert jobs.wait(30)
    last = update_events(outbox)[-1]
    assert last["state"] == "failed"
    assert "HTTP 404" in last["error"]
    assert last["hint"]
    assert "s3cr3t" not in repr(update_events(outbox)) + repr(jobs.report())
    assert last["url"].endswith("/missing.raucb?…")


def test_the_reboot_waits_for_the_decision_in_flight_but_not_forever(
    tmp_path: Path, outbox: Outbox, server: BundleServer
) -> None:
    quiet, reboots = threading.Lock(), Reboots()
    jobs = jobs_for(tmp_path, outbox, FakeRauc(), quiet=quiet, reboots=reboots, reboot_delay_s=0.5)
    with quiet:  # an inference that never ends
        started = time.monotonic()
        jobs.start(request(server.url("v2.raucb")), requested_by="api")
        assert jobs.wait(30)
    assert len(reboots.at) == 1
    assert reboots.at[0] - started >= 0.5


def test_the_reboot_follows_the_decision_in_flight_as_soon_as_it_ends(
    tmp_path: Path, outbox: Outbox, server: BundleServer
) -> None:
    quiet, reboots = threading.Lock(), Reboots()
    jobs = jobs_for(tmp_path, outbox, FakeRauc(), quiet=quiet, reboots=reboots, reboot_delay_s=30)
    with quiet:
        jobs.start(request(server.url("v2.raucb")), requested_by="api")
        deadline = time.monotonic() + 30
        while jobs.report()["job"]["state"] != "rebooting" and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert reboots.at == [], "rebooted in the middle of a decision"
        released = time.monotonic()
    assert jobs.wait(30)
    assert 0 <= reboots.at[0] - released < 5


PENDING = PendingUpdate(
    from_slot="rootfs.0",
    to_slot="rootfs.1",
    version="2.0.0",
    sha256=SHA,
    recorded_at="2026-12-05T04:29:31Z",
    boot_id="boot-install",
)


def test_at_start_an_update_on_trial_is_reported_installed_once_the_gate_said_good(
    tmp_path: Path, outbox: Outbox
) -> None:
    updates = tmp_path / "updates"
    write_pending(updates, PENDING)
    rauc = FakeRauc(status_before=STATUS_BOOTED_B)
    jobs = jobs_for(tmp_path, outbox, rauc, boot_id="boot-2")
    jobs.watch_previous_update()
    time.sleep(0.3)
    assert update_events(outbox) == [], "installed reported before the health gate decided"
    assert jobs.report()["previous_update"]["result"] == "on_trial"
    write_boot_verdict(
        updates,
        BootVerdict("rootfs.1", "B", "mark-good", "all 3 checks passed", "boot-2", "now"),
    )
    deadline = time.monotonic() + 10
    while not update_events(outbox) and time.monotonic() < deadline:
        time.sleep(0.02)
    jobs.close()
    [event] = update_events(outbox)
    assert (event["result"], event["version"], event["slot"]) == ("installed", "2.0.0", "rootfs.1")
    assert read_pending(updates) is None
    assert jobs.report()["previous_update"] == event


def test_at_start_a_rollback_is_reported_with_the_gate_s_reason(
    tmp_path: Path, outbox: Outbox
) -> None:
    updates = tmp_path / "updates"
    write_pending(updates, PENDING)
    write_boot_verdict(
        updates,
        BootVerdict("rootfs.1", "B", "mark-bad", "model: HTTP 503", "boot-2", "then"),
    )
    rauc = FakeRauc(status_before=status_booted_a_after_rollback())
    jobs = jobs_for(tmp_path, outbox, rauc, boot_id="boot-3")
    jobs.watch_previous_update()
    jobs.close(10)
    [event] = update_events(outbox)
    assert event["result"] == "rolled_back"
    assert event["slot"] == "rootfs.0"
    assert event["reason"] == "the health gate marked rootfs.1 bad: model: HTTP 503"


def test_at_start_without_a_pending_update_nothing_is_asked_or_sent(
    tmp_path: Path, outbox: Outbox
) -> None:
    class NoRauc(FakeRauc):
        def status(self):  # type: ignore[no-untyped-def]
            raise AssertionError("rauc asked without a pending update")

    jobs = jobs_for(tmp_path, outbox, NoRauc())
    jobs.watch_previous_update()
    jobs.close(10)
    assert update_events(outbox) == []
    assert jobs.report() == {"job": None, "previous_update": None}


def test_without_a_b_slots_no_job_starts_and_no_slot_report_is_made(
    tmp_path: Path, outbox: Outbox, server: BundleServer
) -> None:
    jobs = jobs_for(tmp_path, outbox, FakeRauc(), rauc_system_conf=tmp_path / "absent.conf")
    with pytest.raises(NoSlotsError, match="no A/B slots here"):
        jobs.start(request(server.url("v2.raucb")), requested_by="api")
    with pytest.raises(NoSlotsError):
        jobs.slots()
    assert update_events(outbox) == []
