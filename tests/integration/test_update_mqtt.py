"""The MQTT command ``cmd/update`` on a real appliance's uplink, through a real Mosquitto: the
reply, the job's progress as ``update`` events, refusals as ``error`` events.

``rauc``, ``fw_printenv`` and ``systemctl`` are stand-ins on ``PATH`` replaying captured rauc
1.8 output (``tests/support/rauc.py``): the real RAUC needs its D-Bus service and A/B slots, and
no test may reboot this host.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.service import Appliance
from edge.update.records import BootVerdict, PendingUpdate, write_boot_verdict, write_pending
from tests.conftest import ConfigFactory
from tests.integration.uplink_rig import FAST_RECONNECT, collecting, wait_until
from tests.support.collector import Collector
from tests.support.mosquitto import MosquittoBroker, free_port
from tests.support.rauc import (
    FW_ENV_ROLLED_BACK,
    INFO,
    INSTALL_OK,
    STATUS_AFTER_INSTALL,
    BundleServer,
    FakeTools,
    serving,
    status_booted_a_after_rollback,
)

pytestmark = pytest.mark.integration
BASE = "moltbot/test-site/test-device"
BUNDLE = b"stand-in bundle: the stand-in rauc does not read it" * 2000
SHA = hashlib.sha256(BUNDLE).hexdigest()


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTools:
    tools = FakeTools(tmp_path / "bin")
    tools.tool(
        "rauc",
        {"args": ["info"], "stdout": INFO},
        {"args": ["status", "--detailed"], "stdout": STATUS_AFTER_INSTALL},
        {"args": ["install"], "stdout": INSTALL_OK, "wait_for": str(tmp_path / "release")},
    )
    tools.tool("fw_printenv", {"args": [], "stdout": "BOOT_A_LEFT=3\nBOOT_B_LEFT=3\n"})
    tools.tool("systemctl", {"args": ["reboot"]})
    monkeypatch.setenv("PATH", f"{tools.folder}{os.pathsep}{os.environ['PATH']}")
    return tools


@pytest.fixture
def server(tmp_path: Path) -> Iterator[BundleServer]:
    folder = tmp_path / "www"
    folder.mkdir()
    (folder / "moltbot-2.0.0.raucb").write_bytes(BUNDLE)
    with serving(folder) as running:
        yield running


@pytest.fixture
def appliance(make_config: ConfigFactory, tools: FakeTools, tmp_path: Path) -> Iterator[Appliance]:
    system_conf = tmp_path / "system.conf"  # its presence says the system has A/B slots
    system_conf.write_text("[system]\ncompatible=moltbot-test\nbootloader=uboot\n")
    config = make_config(
        inference={"enabled": False},
        uplink=FAST_RECONNECT,
        updates={"rauc_system_conf": str(system_conf)},
    )
    built = Appliance(config)
    assert built.uplink is not None
    built.uplink.start()
    yield built
    assert built.updates.wait(30)
    built.uplink.stop()
    built.outbox.close()


def send(broker: MosquittoBroker, *commands: tuple[str, bytes]) -> None:
    sender = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    sender.connect(broker.host, broker.port)
    sender.loop_start()
    for name, payload in commands:
        sender.publish(f"{BASE}/cmd/{name}", payload, qos=1).wait_for_publish(5)
    sender.disconnect()
    sender.loop_stop()


def listening(appliance: Appliance, broker: MosquittoBroker, consumer: Collector) -> None:
    """Connected and subscribed to its commands: a ping is answered (no flag says so)."""
    assert appliance.uplink is not None and appliance.uplink.wait_connected(10)
    for _ in range(20):
        send(broker, ("ping", b"{}"))
        if consumer.wait_for(lambda _m: bool(replies(consumer, "ping")), 0.5):
            return
    raise AssertionError("the appliance never answered a ping")


def replies(consumer: Collector, command: str) -> list[dict[str, Any]]:
    return [e for e in envelopes(consumer, "status") if e["data"].get("command") == command]


def envelopes(consumer: Collector, kind: str) -> list[dict[str, Any]]:
    found = []
    for message in consumer.events():
        if message.payload.startswith(b"{"):
            envelope = message.json()
            if envelope.get("kind") == kind:
                found.append(envelope | {"topic": message.topic})
    return found


def test_the_update_command_answers_with_its_job_and_reports_progress_as_update_events(
    appliance: Appliance, mosquitto: MosquittoBroker, server: BundleServer, tmp_path: Path
) -> None:
    assert appliance.uplink is not None
    payload = {"url": server.url("moltbot-2.0.0.raucb"), "sha256": SHA, "reboot": False}
    with collecting(mosquitto) as consumer:
        listening(appliance, mosquitto, consumer)
        send(mosquitto, ("update", json.dumps(payload).encode()))
        wait_until(lambda: replies(consumer, "update"), 10, "the command's reply")
        send(mosquitto, ("update", json.dumps(payload).encode()))  # while the first one runs
        wait_until(lambda: envelopes(consumer, "error"), 10, "the refusal of a second update")
        (tmp_path / "release").touch()
        wait_until(
            lambda: any(e["data"]["state"] == "installed" for e in envelopes(consumer, "update")),
            30,
            "the job's last event",
        )
    [reply] = replies(consumer, "update")
    assert reply["data"]["command"] == "update"
    job = reply["data"]["reply"]
    assert (job["state"], job["requested_by"]) == ("queued", "mqtt")
    updates = envelopes(consumer, "update")
    assert {e["topic"] for e in updates} == {f"{BASE}/update"}
    assert {e["data"]["job"] for e in updates} == {job["job"]}
    states = [e["data"]["state"] for e in updates]
    assert states[0] == "queued" and states[-1] == "installed"
    assert "downloading" in states and "installing" in states
    [refusal] = envelopes(consumer, "error")
    assert refusal["data"]["command"] == "update"
    assert refusal["data"]["error"].startswith(f"update {job['job']} is still")


def test_a_malformed_update_command_is_an_error_event_and_starts_nothing(
    appliance: Appliance, mosquitto: MosquittoBroker, server: BundleServer, tools: FakeTools
) -> None:
    assert appliance.uplink is not None
    local_file = {"url": "/var/lib/moltbot/updates/x.raucb", "sha256": SHA}
    bad_hash = {"url": server.url("moltbot-2.0.0.raucb"), "sha256": "abc"}
    with collecting(mosquitto) as consumer:
        listening(appliance, mosquitto, consumer)
        send(
            mosquitto,
            ("update", json.dumps(local_file).encode()),
            ("update", json.dumps(bad_hash).encode()),
            ("update", b"[1, 2]"),
        )
        wait_until(lambda: len(envelopes(consumer, "error")) >= 3, 10, "three refusals")
    errors = [e["data"]["error"] for e in envelopes(consumer, "error")]
    assert "url must be an http:// or https:// URL" in errors[0]
    assert "sha256 must be the bundle's sha256" in errors[1]
    assert "must be a JSON object" in errors[2]
    assert envelopes(consumer, "update") == []
    assert appliance.updates.report()["job"] is None
    assert tools.calls() == []


def test_moltbot_run_reports_a_rollback_of_the_last_update_at_its_start(
    mosquitto: MosquittoBroker, data_dir: Path, tmp_path: Path
) -> None:
    """The whole start: pending.json from the boot that installed, last-boot.json from the new
    slot's failed gate, rauc saying the device is back in A; the event goes out over MQTT."""
    tools = FakeTools(tmp_path / "bin")
    tools.tool(
        "rauc", {"args": ["status", "--detailed"], "stdout": status_booted_a_after_rollback()}
    )
    tools.tool("fw_printenv", {"args": [], "stdout": FW_ENV_ROLLED_BACK})
    updates = data_dir / "updates"
    write_pending(
        updates,
        PendingUpdate("rootfs.0", "rootfs.1", "2.0.0", SHA, "2026-12-05T04:29:31Z", "boot-before"),
    )
    write_boot_verdict(
        updates,
        BootVerdict("rootfs.1", "B", "mark-bad", "system: degraded", "boot-trial", "then"),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLTBOT_")} | {
        "PATH": f"{tools.folder}{os.pathsep}{os.environ['PATH']}",
        "MOLTBOT_DEVICE__ID": "proc-device",
        "MOLTBOT_DEVICE__SITE": "line-9",
        "MOLTBOT_DEVICE__DATA_DIR": str(data_dir),
        "MOLTBOT_UPLINK__HOST": mosquitto.host,
        "MOLTBOT_UPLINK__PORT": str(mosquitto.port),
        "MOLTBOT_API__HOST": "127.0.0.1",
        "MOLTBOT_API__PORT": str(free_port()),
        "MOLTBOT_INFERENCE__ENABLED": "false",
    }
    log = tmp_path / "run.log"
    with collecting(mosquitto, "moltbot/line-9/proc-device/update") as consumer:
        with log.open("w") as stream:
            process = subprocess.Popen(
                [sys.executable, "-m", "edge.cli", "run"], env=env, stdout=stream, stderr=stream
            )
        try:
            arrived = consumer.wait_for(bool, 60)
            assert arrived, log.read_text()
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0, log.read_text()
    event = consumer.events()[0].json()
    assert event["kind"] == "update"
    assert event["data"]["result"] == "rolled_back"
    assert event["data"]["slot"] == "rootfs.0"
    assert event["data"]["reason"] == "the health gate marked rootfs.1 bad: system: degraded"
    assert not (updates / "pending.json").exists()
