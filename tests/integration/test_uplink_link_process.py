"""The uplink's MQTT client in a process of its own (``uplink.link_process``, on by default):
that process killed mid-drain, the uplink stopped, the appliance killed under it, and errors
raised over there reaching the uplink as they were."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge import wiring
from edge.errors import ConfigError
from edge.uplink.remote_client import LinkProcess
from edge.uplink.sync import Uplink
from tests.conftest import ConfigFactory
from tests.integration.uplink_rig import (
    FAST_RECONNECT,
    collecting,
    environment,
    first_occurrences,
    open_outbox,
    running_uplink,
    wait_until,
)
from tests.support.mosquitto import MosquittoBroker, free_port

pytestmark = pytest.mark.integration

STATUS_TOPIC = "moltbot/test-site/test-device/status"

APPLIANCE = """
import sys, time
from edge import wiring
from edge.config import load_config
from edge.uplink.sync import Uplink
config = load_config().config
outbox = wiring.open_outbox(config, has_rtc=True)
uplink = Uplink(outbox, config.uplink, wiring.topic_scheme(config))
uplink.start()
assert uplink.wait_connected(20)
print(uplink.link_process_pid, flush=True)
time.sleep(600)
"""


def process_gone(pid: int) -> bool:
    """Exited (a zombie no one reaped yet counts: it runs nothing and holds no socket)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def test_a_killed_link_process_is_replaced_and_the_drain_loses_nothing(
    make_config: ConfigFactory, mosquitto: MosquittoBroker
) -> None:
    config = make_config(uplink=FAST_RECONNECT | {"inflight_window": 32})
    outbox = open_outbox(config)
    put_ids = [outbox.put("telemetry", {"n": n, "pad": "x" * 200}).id for n in range(20_000)]
    with collecting(mosquitto) as consumer, running_uplink(config, outbox) as uplink:
        wait_until(lambda: len(consumer.events()) >= 1000, 30, "the drain to get going")
        first_pid = uplink.link_process_pid
        assert first_pid is not None
        os.kill(first_pid, signal.SIGKILL)
        left_at_kill = len(outbox)
        assert consumer.wait_for_ids(set(put_ids), 120)
        assert uplink.wait_drained(10)
        second_pid = uplink.link_process_pid
        received = consumer.event_ids()
        connects = uplink.counters.connects_total
    assert left_at_kill > 0  # it really died mid-drain
    assert second_pid is not None and second_pid != first_pid
    assert connects >= 2
    assert first_occurrences(received) == put_ids  # resent from the oldest unacknowledged
    assert process_gone(first_pid)
    outbox.close()


def test_stopping_the_uplink_says_offline_and_ends_its_link_process(
    make_config: ConfigFactory, mosquitto: MosquittoBroker
) -> None:
    config = make_config()
    outbox = open_outbox(config)
    outbox.put("defect", {"class": "crack"})
    with collecting(mosquitto, STATUS_TOPIC) as watcher:
        uplink = Uplink(outbox, config.uplink, wiring.topic_scheme(config))
        uplink.start()
        assert uplink.wait_connected(10)
        assert uplink.wait_drained(10)
        pid = uplink.link_process_pid
        assert pid is not None and not process_gone(pid)
        uplink.stop()
        assert uplink.link_process_pid is None
        assert process_gone(pid)
        assert watcher.wait_for(lambda ms: ms and ms[-1].payload == b"offline", 10)
    outbox.close()


def test_the_link_process_ends_with_a_killed_appliance_and_the_broker_says_offline(
    data_dir: Path, mosquitto: MosquittoBroker
) -> None:
    env = environment(data_dir, mosquitto)
    with collecting(mosquitto, STATUS_TOPIC) as watcher:
        appliance = subprocess.Popen(
            [sys.executable, "-c", APPLIANCE], env=env, stdout=subprocess.PIPE, text=True
        )
        try:
            assert appliance.stdout is not None
            link_pid = int(appliance.stdout.readline())
            assert watcher.wait_for(lambda ms: ms and ms[-1].payload == b"online", 10)
            appliance.send_signal(signal.SIGKILL)
            appliance.wait(10)
            wait_until(lambda: process_gone(link_pid), 10, "the link process to end")
            # no DISCONNECT was sent for a device that died: the broker publishes its will
            assert watcher.wait_for(lambda ms: ms[-1].payload == b"offline", 10)
        finally:
            appliance.kill()
            appliance.wait(10)
            if appliance.stdout is not None:
                appliance.stdout.close()


def test_errors_raised_in_the_link_process_reach_the_uplink_as_they_were(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config(uplink={"port": free_port()})
    not_a_certificate = tmp_path / "ca.pem"
    not_a_certificate.write_text("this is not PEM\n")
    tls = config.uplink.tls.model_copy(update={"enabled": True, "ca_file": not_a_certificate})
    bad_tls = config.uplink.model_copy(update={"tls": tls})
    link = LinkProcess()
    try:
        client = link.client(config.uplink, "test-device")
        with pytest.raises(ConnectionRefusedError):
            client.connect(config.uplink.host, config.uplink.port, keepalive=30)
        with pytest.raises(ConfigError, match="cannot load the TLS files"):
            link.client(bad_tls, "test-device")
        assert link.client(config.uplink, "test-device") is not client  # still serving
    finally:
        link.close()
    assert link.pid is None
