"""The A/B update scenario's parts, shared by its test and its benchmark: bundles derived from
a built image's own root file system, and the device under test (QEMU that reboots for real,
its console, its API, the events it sends to the plant's broker)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from images.debugfs import cat as debugfs_cat
from images.qemu import HOST_FROM_GUEST, QemuBoot
from images.rootfs import default_cache_dir
from images.update_bundle import create_bundle
from images.update_keys import init_keys, signing_files
from tests.support.ab_update import derive_root, extract_partition
from tests.support.collector import Collector
from tests.support.mosquitto import MosquittoBroker, free_port
from tests.support.qemu_image import GuestApi, keep_console

DEVICE = "ab-test-01"
TOKEN = "ab-update-token-0123456789abcdef"
RELEASE_FILE = "/etc/moltbot/release"
APPLIANCE_UNIT = "/usr/lib/systemd/system/moltbot.service"
GATE_DEADLINE_S = 150  # good slots pass in 15-35 s here; the broken one fails after this
BOOT_S = 600  # reset to a healthy appliance under TCG: ~90 s here, generous for slow CI hosts
INSTALL_S = 1200  # download + rauc install of a 2 GiB slot under TCG
SLOT_NAMES = {"A": "rootfs.0", "B": "rootfs.1"}


@dataclass(frozen=True)
class Bundle:
    path: Path
    version: str
    sha256: str

    def request(self, port: int, *, reboot: bool = True) -> dict[str, Any]:
        url = f"http://{HOST_FROM_GUEST}:{port}/{self.path.name}"
        return {"url": url, "sha256": self.sha256, "reboot": reboot}


@dataclass(frozen=True)
class Bundles:
    compatible: str
    first_release: str
    newer: Bundle
    broken: Bundle
    other_ca: Bundle
    other_compatible: Bundle


def _bundle(root: Path, out: Path, compatible: str, version: str, keys: Path) -> Bundle:
    create_bundle(
        root, out=out, compatible=compatible, version=version, signing=signing_files(keys)
    )
    return Bundle(out, version, hashlib.sha256(out.read_bytes()).hexdigest())


def make_bundles(built_image: Path, work: Path) -> Bundles:
    """The scenario's bundles in ``work/www``, made from the image's own root file system
    (slot A) and signed with the keys the image trusts (and, for one, with others)."""
    www = work / "www"
    www.mkdir(parents=True)
    manifest = json.loads((built_image.parent / "manifest.json").read_text())
    compatible, first = manifest["update"]["compatible"], manifest["update"]["version"]
    keys = default_cache_dir() / "update-keys"  # the keys the image was built to trust
    root = extract_partition(built_image, 1, work / "root-a.ext4")
    assert debugfs_cat(root, RELEASE_FILE).decode().strip() == first

    newer_version, broken_version = f"{first}.ab-newer", f"{first}.ab-broken"
    newer_root = derive_root(
        root, work / "newer.ext4", {RELEASE_FILE: f"{newer_version}\n".encode()}, work
    )
    newer = _bundle(newer_root, www / "newer.raucb", compatible, newer_version, keys)
    newer_root.unlink()
    unit = debugfs_cat(root, APPLIANCE_UNIT).decode()
    crashing = re.sub(r"(?m)^ExecStart=.*$", "ExecStart=/bin/false", unit)
    assert crashing != unit, "the appliance's unit has no ExecStart"
    broken_root = derive_root(
        root,
        work / "broken.ext4",
        {RELEASE_FILE: f"{broken_version}\n".encode(), APPLIANCE_UNIT: crashing.encode()},
        work,
    )
    broken = _bundle(broken_root, www / "broken.raucb", compatible, broken_version, keys)
    broken_root.unlink()
    root.unlink()

    # Refused before anything is written: a small file system is enough.
    tree = work / "small-tree"
    tree.mkdir()
    (tree / "payload").write_bytes(os.urandom(256 * 1024))  # squashfs wants > 1 block
    small = work / "small.ext4"
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(small), "8M"], check=True)
    other_keys = init_keys(work / "other-keys").directory
    return Bundles(
        compatible=compatible,
        first_release=first,
        newer=newer,
        broken=broken,
        other_ca=_bundle(small, www / "other-ca.raucb", compatible, "9.0.0", other_keys),
        other_compatible=_bundle(
            small, www / "other-board.raucb", "moltbot-jetson-agx-orin-appliance", "9.0.0", keys
        ),
    )


def guest_site(broker: MosquittoBroker) -> dict[str, object]:
    """The site file of the device under test."""
    return {
        "device": {"id": DEVICE, "name": "A/B update test"},
        "uplink": {"host": HOST_FROM_GUEST, "port": broker.port, "protocol": "5"},
        "api": {"token": TOKEN},
        "voice": {"enabled": False},  # not what the scenario is about; saves boot time
        # the broken release never becomes ready: the gate gives up after this long
        "updates": {"health_gate_deadline_s": GATE_DEADLINE_S},
    }


class Guest:
    """The device under test: QEMU with the image, its console, its API and its events."""

    def __init__(self, image: Path, workdir: Path, broker: MosquittoBroker) -> None:
        self.image = image
        self.workdir = workdir
        self.broker = broker
        self.api = GuestApi(free_port(), TOKEN)
        self.boot: QemuBoot | None = None
        self.boots = 0
        self.events = Collector(
            broker.host, broker.port, f"moltbot/+/{DEVICE}/#", "ab-plant", persistent=True
        )

    def power_on(self) -> None:
        self.boots += 1
        self.boot = QemuBoot(
            self.image,
            self.workdir,
            api_port=self.api.port,
            no_reboot=False,  # a reboot resets the machine: U-Boot picks the slot again
            log_name=f"power-on-{self.boots}.log",
        )
        self.boot.start()

    @property
    def qemu(self) -> QemuBoot:
        assert self.boot is not None, "the guest is off"
        return self.boot

    def power_cut(self) -> None:
        self.keep_console()
        self.qemu.power_cut()
        self.boot = None

    def keep_console(self) -> None:
        if self.boot is not None:
            keep_console(self.boot, f"last-ab-update-{self.boots}.log")

    def wait_console(self, pattern: str, timeout_s: float, since: int, what: str) -> str:
        found = self.qemu.wait_for(pattern, timeout_s, since)
        console = self.qemu.console()
        assert found is not None, f"{what}: no {pattern!r}; console ends:\n{console[-5000:]}"
        return console[since:]

    def wait_booted(self, slot: str, since: int) -> str:
        """U-Boot chose ``slot``, and its appliance answers ``/healthz``."""
        self.wait_console(rf"moltbot-boot: booting slot {slot}\b", BOOT_S, since, f"slot {slot}")
        health = self.api.wait_healthy(BOOT_S)
        assert health is not None, f"slot {slot} never answered /healthz: {self.console_tail()}"
        return self.qemu.console()[since:]

    def wait_verdict(self, slot: str, verdict: str, since: int) -> None:
        """The health gate of this boot marked ``slot`` (A/B) ``verdict`` (good/bad)."""
        name = SLOT_NAMES[slot]
        pattern = rf"health gate: mark-{verdict} {name}\b"
        self.wait_console(pattern, BOOT_S, since, f"gate of {slot}")

    def wait_reset(self, since: int, timeout_s: float, what: str) -> None:
        """The update job ended in a reboot (U-Boot runs again); fails at once if it failed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.qemu.wait_for(r"moltbot-boot: BOOT_ORDER=", 3, since) is not None:
                return
            try:
                job = self.job() or {}
            except OSError:  # going down for the reboot
                continue
            assert job.get("state") != "failed", f"{what}: {job}"
        raise AssertionError(f"{what}: no reboot after {timeout_s:.0f} s; {self.console_tail()}")

    def slots(self) -> dict[str, Any]:
        report: dict[str, Any] = self.api.get("/v1/system/slots", timeout_s=60)
        return report

    def slot(self, report: dict[str, Any], bootname: str) -> dict[str, Any]:
        found: dict[str, Any] = next(s for s in report["slots"] if s["bootname"] == bootname)
        return found

    def job(self) -> dict[str, Any]:
        job: dict[str, Any] = self.api.get("/v1/system/update")["job"]
        return job

    def wait_job(self, done: Any, timeout_s: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                job = self.job() or {}
            except OSError:  # the guest is rebooting
                job = {"state": "unreachable"}
            if done(job):
                return job
            time.sleep(3)
        raise AssertionError(f"{what}: the update job is still {job}; {self.console_tail()}")

    def update_events(self) -> list[dict[str, Any]]:
        return [
            m.json()["data"] for m in self.events.events() if m.topic.endswith(f"/{DEVICE}/update")
        ]

    def wait_update_event(self, result: str, version: str, timeout_s: float) -> dict[str, Any]:
        def matching() -> list[dict[str, Any]]:
            return [
                e
                for e in self.update_events()
                if e.get("result") == result and e.get("version") == version
            ]

        self.events.wait_for(lambda _m: bool(matching()), timeout_s)
        found = matching()
        assert found, f"no {result} event for {version}: {self.update_events()}"
        return found[-1]

    def command(self, name: str, payload: dict[str, Any]) -> None:
        """A command on the device's cmd/ topic, as the plant's systems send it."""
        status = next(m.topic for m in self.events.messages if m.topic.endswith("/status"))
        topic = f"{status.removesuffix('/status')}/cmd/{name}"
        sender = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        sender.connect(self.broker.host, self.broker.port)
        sender.loop_start()
        try:
            sender.publish(topic, json.dumps(payload), qos=1).wait_for_publish(10)
        finally:
            sender.disconnect()
            sender.loop_stop()

    def console_tail(self) -> str:
        return "console ends:\n" + (self.boot.console()[-4000:] if self.boot else "(off)")

    def close(self) -> None:
        self.keep_console()
        if self.boot is not None:
            self.boot.stop()
        self.events.close()
