"""The uplink's MQTT client in a process of its own (``uplink.link_process``, on by default):
that process killed mid-drain, the uplink stopped, the appliance killed under it, and errors
raised over there reaching the uplink as they were."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, ClassVar

import pytest

from edge import wiring
from edge.errors import ConfigError
from edge.uplink import link_process as wire
from edge.uplink import remote_client
from edge.uplink.connection import ClientOptions
from edge.uplink.link_process import LinkServer
from edge.uplink.remote_client import LinkProcess, LinkProcessError, RemoteClient, RemotePublishInfo
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
from tests.support import procfs
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


def broker_log_count(broker: MosquittoBroker, line: str) -> int:
    return broker.log_path.read_text(errors="replace").count(line)


CLEAN_DISCONNECT = "Client test-device disconnected."  # Mosquitto, on a DISCONNECT
DROPPED = "Client test-device closed its connection."  # ... on a socket closed without one


def process_gone(pid: int) -> bool:
    """Exited (a zombie no one reaped yet counts: it runs nothing and holds no socket)."""
    return procfs.state(pid) in (None, "Z", "X")


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
    clean, dropped = (broker_log_count(mosquitto, line) for line in (CLEAN_DISCONNECT, DROPPED))
    with collecting(mosquitto, STATUS_TOPIC) as watcher:
        uplink = Uplink(outbox, config.uplink, wiring.topic_scheme(config))
        uplink.start()
        assert uplink.wait_connected(10)
        assert uplink.wait_drained(10)
        pid = uplink.link_process_pid
        assert pid is not None and not process_gone(pid)
        uplink.stop()
        assert uplink.link_process_pid is None
        assert not Path(f"/proc/{pid}").exists()  # ended and reaped: no zombie left behind
        assert watcher.wait_for(lambda ms: ms and ms[-1].payload == b"offline", 10)
    wait_until(
        lambda: broker_log_count(mosquitto, CLEAN_DISCONNECT) > clean, 10, "a clean DISCONNECT"
    )
    assert broker_log_count(mosquitto, DROPPED) == dropped  # the goodbye, not the will
    outbox.close()


def test_the_link_process_ends_with_a_killed_appliance_and_the_broker_says_offline(
    data_dir: Path, mosquitto: MosquittoBroker
) -> None:
    env = environment(data_dir, mosquitto)
    dropped = broker_log_count(mosquitto, DROPPED)
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
            wait_until(lambda: broker_log_count(mosquitto, DROPPED) > dropped, 10, "a drop")
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
        pid = link.pid
        with pytest.raises(ConnectionRefusedError):
            client.connect(config.uplink.host, config.uplink.port, keepalive=30)
        with pytest.raises(ConfigError, match="cannot load the TLS files"):
            link.client(bad_tls, "test-device")
        link.client(config.uplink, "test-device")
        assert link.pid == pid  # the same process answered all three: none of it crashed
    finally:
        link.close()
    assert link.pid is None


def test_a_link_process_that_died_is_started_again_by_the_next_client(
    make_config: ConfigFactory,
) -> None:
    config = make_config()
    link = LinkProcess()
    try:
        link.client(config.uplink, "test-device")
        first = link.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while True:  # at once, or after the end was noticed: never a hang
            try:
                link.client(config.uplink, "test-device")
                break
            except LinkProcessError:
                assert time.monotonic() < deadline, "the link process was not started again"
        assert link.pid not in (None, first)
    finally:
        link.close()


def test_qos0_publishes_through_the_link_process_are_reported_once_written(
    make_config: ConfigFactory, mosquitto: MosquittoBroker
) -> None:
    config = make_config()
    link = LinkProcess()
    heard: list[int] = []
    connected = threading.Event()
    try:
        client = link.client(config.uplink, "qos0-test")
        client.on_connect = lambda *_args: connected.set()
        client.on_publish = lambda _c, _u, mid, _code, _p: heard.append(mid)
        client.connect(mosquitto.host, mosquitto.port, keepalive=30)
        assert connected.wait(10)
        with collecting(mosquitto, "qos0/#") as consumer:
            infos = [client.publish("qos0/t", f"{n}".encode(), qos=0) for n in range(50)]
            wait_until(lambda: len(heard) == 50, 10, "every QoS 0 publish reported")
            assert consumer.wait_for(lambda ms: len(ms) == 50, 10)
        assert sorted(heard) == sorted(info.mid for info in infos)
        assert all(info.is_published() for info in infos)
    finally:
        link.close()


@dataclass
class ServedLink:
    """A LinkServer in a thread of this process, connected to ``broker`` with ``window``."""

    broker: MosquittoBroker
    server: LinkServer
    channel: Connection
    events: list[tuple[Any, ...]] = field(default_factory=list)

    def receive_until(self, done: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not done() and self.channel.poll(max(0.0, deadline - time.monotonic())):
            self.events.extend(self.channel.recv())

    def acked(self) -> list[int]:
        return [event[1] for event in self.events if event[0] == wire.ACK]


@contextmanager
def served_link(broker: MosquittoBroker, window: int) -> Iterator[ServedLink]:
    broker.start()
    ours, theirs = Pipe()
    served = ServedLink(broker, LinkServer(theirs), ours)
    serving = threading.Thread(target=served.server.serve, daemon=True)
    serving.start()
    try:
        ours.send(
            [
                (wire.BUILD, 1, ClientOptions(), "window-test"),
                (wire.CALL, "max_inflight_messages_set", (window,)),
                (wire.CONNECT, 2, broker.host, broker.port, 30),
            ]
        )
        served.receive_until(lambda: any(e[0] == wire.CONNACK for e in served.events), 10)
        assert any(e[0] == wire.CONNACK and e[1] == 0 for e in served.events), served.events
        yield served
    finally:
        ours.close()
        serving.join(10)
        broker.stop()


def publish_command(n: int, topic: str, payload: bytes, *, first: bool = False) -> tuple[Any, ...]:
    return (wire.PUBLISH, n, topic, payload, 1, False, None, first)


@pytest.mark.parametrize(
    ("receive_maximum", "window", "in_flight"),
    [(None, 8, 8), (5, 8, 5)],
    ids=["the-window", "the-brokers-receive-maximum"],
)
def test_a_silent_broker_holds_the_window_in_flight_and_the_rest_go_in_order_when_it_answers(
    tmp_path: Path, receive_maximum: int | None, window: int, in_flight: int
) -> None:
    """The link process keeps paho's in-flight limit itself (``link_window``): with the broker
    hung, exactly ``window`` QoS 1 publishes are out and the others wait; when it answers,
    every one is acknowledged and delivered, in the order the appliance sent them. A broker
    that names a smaller Receive Maximum in its CONNACK (Mosquitto: ``max_inflight_messages``)
    gets no more than that in flight, as MQTT 5 requires."""
    extra = f"max_inflight_messages {receive_maximum}\n" if receive_maximum else ""
    broker = MosquittoBroker(tmp_path / "broker", extra_config=extra)
    count = 300
    with served_link(broker, window) as link, collecting(broker, "window/#") as consumer:
        broker.pause()
        link.channel.send([publish_command(n, "window/t", b"%d" % n) for n in range(count)])
        window_of = link.server.window
        wait_until(lambda: window_of.waiting() == count - in_flight, 10, "publishes to wait")
        time.sleep(0.3)  # nothing more goes out while nothing is acknowledged
        assert (window_of.in_flight, window_of.waiting()) == (in_flight, count - in_flight)
        broker.resume()
        link.receive_until(lambda: len(link.acked()) >= count, 30)
        assert link.acked() == list(range(count))
        assert all(e[2] == 0 for e in link.events if e[0] == wire.ACK)
        assert consumer.wait_for(lambda ms: len(ms) >= count, 10)
        assert [m.payload for m in consumer.messages] == [b"%d" % n for n in range(count)]
        assert (window_of.in_flight, window_of.waiting()) == (0, 0)


def test_a_live_publish_overtakes_the_backlog_waiting_in_the_link_process(tmp_path: Path) -> None:
    """The live lane through the link process: a publish sent ``first`` while backlog
    publishes wait for the in-flight window (the broker hung) goes out before them."""
    broker = MosquittoBroker(tmp_path / "broker")
    with served_link(broker, 4) as link, collecting(broker, "lane/#") as consumer:
        broker.pause()
        link.channel.send([publish_command(n, "lane/backlog", b"%d" % n) for n in range(20)])
        wait_until(lambda: link.server.window.waiting() == 16, 10, "the backlog to wait")
        link.channel.send([publish_command(100, "lane/live", b"defect", first=True)])
        wait_until(lambda: link.server.window.waiting() == 17, 10, "the live one to wait")
        broker.resume()
        assert consumer.wait_for(lambda ms: len(ms) >= 21, 20)
        arrived = [m.payload for m in consumer.messages]
    assert arrived[:4] == [b"%d" % n for n in range(4)]  # already sent when the live one came
    assert arrived[4] == b"defect"
    assert arrived[5:] == [b"%d" % n for n in range(4, 20)]


class LaneRecordingClient(RemoteClient):
    """The link process's client, noting which lane each publish took and when the waiting
    publishes were dropped."""

    lanes: ClassVar[list[tuple[str, str]]] = []

    def publish(self, topic: str, *args: Any, **kwargs: Any) -> RemotePublishInfo:
        self.lanes.append(("first" if kwargs.get("first") else "publish", topic))
        return super().publish(topic, *args, **kwargs)

    def forget_waiting(self) -> None:
        self.lanes.append(("forget_waiting", ""))
        super().forget_waiting()


def test_live_events_take_the_first_lane_and_the_goodbye_comes_after_what_was_in_flight(
    make_config: ConfigFactory, mosquitto: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the JSON dialect a live defect is sent ahead of the backlog handed to the link
    process; the backlog is not. On stop, what still waits there is dropped (it is in the
    outbox) before the goodbye, so nothing is published after "offline"."""
    LaneRecordingClient.lanes = []
    monkeypatch.setattr(remote_client, "RemoteClient", LaneRecordingClient)
    config = make_config(uplink={"inflight_window": 8})  # a drain of seconds: stopped mid-way
    outbox = open_outbox(config)
    for start in range(0, 60_000, 500):
        outbox.put_many(outbox.accept("telemetry", {"n": n}) for n in range(start, start + 500))
    with collecting(mosquitto) as consumer:
        uplink = Uplink(outbox, config.uplink, wiring.topic_scheme(config))
        uplink.start()
        wait_until(lambda: len(consumer.events()) >= 500, 30, "the drain to start")
        live = outbox.put("defect", {"class": "crack"})
        assert consumer.wait_for_ids({live.id}, 10)
        uplink.stop()
        assert consumer.wait_for(lambda ms: ms[-1].payload == b"offline", 10)
        time.sleep(0.5)  # anything published after the goodbye would have arrived by now
        last = consumer.messages[-1].payload
    lanes = LaneRecordingClient.lanes
    first = [topic for lane, topic in lanes if lane == "first"]
    assert first == ["moltbot/test-site/test-device/defect"]
    assert ("publish", "moltbot/test-site/test-device/telemetry") in lanes
    assert lanes[-2:] == [("forget_waiting", ""), ("publish", STATUS_TOPIC)]
    assert len(outbox) > 0  # stopped mid-drain: the dropped ones are still owed
    assert last == b"offline"  # nothing after the goodbye
    outbox.close()
