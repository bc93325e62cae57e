"""Over-the-air A/B updates on the built image, end to end, under QEMU (virt, TCG).

One scenario, on one configured copy of the image that reboots for real (Debian's U-Boot runs
the image's boot.scr at every reset and picks the slot by RAUC's boot counters):

1. slot A boots and its health gate marks it good;
2. a bundle with a newer release (derived from the image's own root file system) is installed
   over the API; the appliance asks for the reboot, U-Boot starts slot B, the gate marks it
   good, ``/healthz`` answers with the new release and the ``installed`` event reaches the
   host's Mosquitto;
3. with the broker down, a defective part is reported (an event in the outbox), then an update
   starts and the power is cut while RAUC writes slot A (good until then): the next boot is
   slot B, and the event queued before the update reaches the broker once it is back;
4. a bundle whose release never becomes ready (its appliance exits at start) is installed
   through the MQTT command ``cmd/update``; slot A boots with it, the gate gives up after its
   deadline, marks A bad and reboots; U-Boot is back in B, and the appliance reports
   ``rolled_back`` with the gate's reason;
5. a bundle signed by another CA and one for another ``compatible`` are refused over the API;
   nothing is written to a slot.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ab_guest import (
    BOOT_S,
    DEVICE,
    INSTALL_S,
    Bundles,
    Guest,
    guest_site,
    make_bundles,
)
from tests.support.ab_update import serve_folder
from tests.support.models import defect_png
from tests.support.mosquitto import MosquittoBroker
from tests.support.qemu_image import REPO, configured_copy

pytestmark = [pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(3600)]


@pytest.fixture(scope="module")
def bundles(built_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Bundles:
    return make_bundles(built_image, tmp_path_factory.mktemp("ab-bundles"))


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """The plant's broker, persistent: the collector's session and its queued messages survive
    the outage the scenario makes."""
    broker = MosquittoBroker(workdir=tmp_path_factory.mktemp("ab-broker"), persistence=True)
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def guest(built_image: Path, tmp_path: Path, broker: MosquittoBroker) -> Iterator[Guest]:
    image = configured_copy(built_image, tmp_path, guest_site(broker))
    device = Guest(image, tmp_path, broker)
    yield device
    device.close()


def test_updates_install_into_the_other_slot_roll_back_by_themselves_and_survive_a_power_cut(
    guest: Guest, bundles: Bundles, broker: MosquittoBroker
) -> None:
    timings: dict[str, float] = {}
    with serve_folder(bundles.newer.path.parent) as port:
        first_boot_is_slot_a_marked_good(guest, bundles, timings)
        newer_release_over_the_api_boots_slot_b(guest, bundles, port, timings)
        power_cut_while_writing_slot_a_boots_slot_b_and_keeps_the_backlog(
            guest, bundles, broker, port
        )
        broken_release_over_mqtt_is_rolled_back(guest, bundles, port, timings)
        bundles_of_another_ca_or_board_are_refused(guest, bundles, port)
    print(f"A/B update under TCG: {timings}")  # noqa: T201
    (REPO / "images" / "out" / "ab-update-timings.json").write_text(
        json.dumps(timings, indent=2) + "\n"
    )


def first_boot_is_slot_a_marked_good(
    guest: Guest, bundles: Bundles, timings: dict[str, float]
) -> None:
    started = time.monotonic()
    guest.power_on()
    guest.wait_booted("A", since=0)
    timings["boot_to_healthz_s"] = time.monotonic() - started
    assert guest.api.get("/healthz")["release"] == bundles.first_release
    guest.wait_verdict("A", "good", since=0)
    slots = guest.slots()
    assert (slots["booted"], slots["compatible"]) == ("A", bundles.compatible), slots


def newer_release_over_the_api_boots_slot_b(
    guest: Guest, bundles: Bundles, port: int, timings: dict[str, float]
) -> None:
    mark = guest.qemu.mark()
    started = time.monotonic()
    job = guest.api.post_json("/v1/system/update", bundles.newer.request(port))
    assert job["state"] == "queued", job
    guest.wait_reset(mark, INSTALL_S, "the newer release")
    timings["download_and_install_s"] = time.monotonic() - started
    rebooting = time.monotonic()
    guest.wait_booted("B", since=mark)
    timings["reboot_to_healthz_s"] = time.monotonic() - rebooting
    guest.wait_verdict("B", "good", since=mark)
    timings["reboot_to_marked_good_s"] = time.monotonic() - rebooting
    assert guest.api.get("/healthz")["release"] == bundles.newer.version
    installed = guest.wait_update_event("installed", bundles.newer.version, 300)
    assert (installed["from_slot"], installed["to_slot"]) == ("rootfs.0", "rootfs.1"), installed
    slots = guest.slots()
    assert slots["booted"] == "B", slots
    assert guest.slot(slots, "B")["bundle_version"] == bundles.newer.version, slots
    assert guest.slot(slots, "A")["boot_status"] == "good", slots  # the way back stays open


def power_cut_while_writing_slot_a_boots_slot_b_and_keeps_the_backlog(
    guest: Guest, bundles: Bundles, broker: MosquittoBroker, port: int
) -> None:
    """Slot A is good when the install starts; RAUC takes it out of the boot order before
    writing, so the cut leaves a device that boots B, not a half-written A."""
    broker.stop()
    answer = guest.api.post(
        "/v1/infer?trigger=true&part_id=SN-BEFORE-CUT", defect_png(), "image/png"
    )
    assert answer["label"] == "scratch", answer
    guest.api.post_json("/v1/system/update", bundles.newer.request(port))
    writing = guest.wait_job(
        lambda j: (
            j.get("state") not in ("queued", "downloading", "verifying", "installing")
            or "Copying" in (j.get("message") or "")
        ),
        INSTALL_S,
        "install before the power cut",
    )
    assert writing["state"] == "installing", writing
    time.sleep(5)
    assert guest.job()["state"] == "installing", "the install ended before the cut"
    guest.power_cut()
    guest.power_on()
    console = guest.wait_booted("B", since=0)
    assert "moltbot-boot: booting slot A" not in console, "the half-written slot was tried"
    guest.wait_verdict("B", "good", since=0)
    broker.start()
    assert guest.events.wait_for(
        lambda got: any(
            m.topic.endswith(f"/{DEVICE}/defect") and b"SN-BEFORE-CUT" in m.payload for m in got
        ),
        300,
    ), "the defect queued before the power cut never reached the broker"
    slots = guest.slots()
    assert guest.slot(slots, "A")["boot_status"] == "bad", slots


def broken_release_over_mqtt_is_rolled_back(
    guest: Guest, bundles: Bundles, port: int, timings: dict[str, float]
) -> None:
    mark = guest.qemu.mark()
    guest.command("update", bundles.broken.request(port))
    guest.wait_reset(mark, INSTALL_S, "the broken release")
    guest.wait_console(r"moltbot-boot: booting slot A\b", BOOT_S, mark, "broken release")
    tried = time.monotonic()
    guest.wait_verdict("A", "bad", since=mark)
    back = guest.qemu.mark()
    guest.wait_booted("B", since=back)
    timings["broken_boot_to_good_slot_healthz_s"] = time.monotonic() - tried
    assert guest.api.get("/healthz")["release"] == bundles.newer.version
    rollback = guest.wait_update_event("rolled_back", bundles.broken.version, 300)
    assert "/readyz" in rollback["reason"], rollback
    assert (rollback["slot"], rollback["to_slot"]) == ("rootfs.1", "rootfs.0"), rollback
    guest.wait_verdict("B", "good", since=back)
    slots = guest.slots()
    assert guest.slot(slots, "A")["boot_status"] == "bad", slots
    assert guest.slot(slots, "B")["boot_status"] == "good", slots


def bundles_of_another_ca_or_board_are_refused(guest: Guest, bundles: Bundles, port: int) -> None:
    before = guest.slots()
    for bundle, said in (
        (bundles.other_ca, "rauc cannot read the bundle"),
        (bundles.other_compatible, "moltbot-jetson-agx-orin-appliance"),
    ):
        guest.api.post_json("/v1/system/update", bundle.request(port, reboot=False))
        failed = guest.wait_job(
            lambda j: j.get("state") in ("failed", "installed", "rebooting"), 600, "refusal"
        )
        assert failed["state"] == "failed" and said in (failed["error"] or ""), failed
    after = guest.slots()
    assert after["booted"] == "B", after
    for name in ("A", "B"):
        kept = ("bundle_version", "installed_at", "boot_status")
        assert {k: guest.slot(after, name)[k] for k in kept} == {
            k: guest.slot(before, name)[k] for k in kept
        }, (before, after)
