"""The channel to the link process, without a broker: ordered batches, answers and events
turned back into paho's callbacks, and the link server's loop on a real socket pair."""

from __future__ import annotations

import threading
from multiprocessing import Pipe
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from edge.uplink import link_process as wire
from edge.uplink.connection import ClientOptions
from edge.uplink.link_channel import BatchSender, ChannelClosedError
from edge.uplink.link_process import LinkServer
from edge.uplink.remote_client import RemoteClient
from tests.support.mosquitto import free_port


def test_items_from_many_threads_arrive_all_and_in_each_threads_order() -> None:
    ours, theirs = Pipe()
    sender = BatchSender(ours, "test-sender")
    threads = [
        threading.Thread(target=lambda t=t: [sender.put((t, n)) for n in range(2000)])
        for t in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sender.close()
    received: list[tuple[Any, ...]] = []
    batches = 0
    while theirs.poll(1):
        received.extend(theirs.recv())
        batches += 1
    assert sorted(received) == [(t, n) for t in range(4) for n in range(2000)]
    for t in range(4):
        assert [n for who, n in received if who == t] == list(range(2000))
    assert batches < len(received)  # batched, not one message per item


def test_a_sender_whose_other_end_is_gone_says_so() -> None:
    ours, theirs = Pipe()
    sender = BatchSender(ours, "test-sender")
    theirs.close()
    sender.put(("lost",))
    assert sender.broken.wait(5)
    with pytest.raises(ChannelClosedError):
        sender.put(("refused",))


class RecordingLink:
    """What a RemoteClient needs of its link: ids, and somewhere to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[Any, ...]] = []
        self.last_id = 0

    def next_id(self) -> int:
        self.last_id += 1
        return self.last_id

    def send(self, command: tuple[Any, ...]) -> None:
        self.sent.append(command)


def remote_client() -> tuple[RemoteClient, RecordingLink, list[tuple[str, Any]]]:
    link = RecordingLink()
    client = RemoteClient(link, connect_timeout_s=5.0)  # type: ignore[arg-type]
    heard: list[tuple[str, Any]] = []
    client.on_publish = lambda _c, _u, mid, code, _p: heard.append(("publish", (mid, code)))
    client.on_disconnect = lambda _c, _u, _f, code, _p: heard.append(("disconnect", code))
    client.on_connect = lambda _c, _u, _f, code, _p: heard.append(("connect", code))
    client.on_message = lambda _c, _u, message: heard.append(
        ("message", (message.topic, message.payload))
    )
    return client, link, heard


def test_a_puback_marks_the_publish_done_and_reaches_on_publish_with_its_code() -> None:
    client, link, heard = remote_client()
    info = client.publish("t/a", b"payload", qos=1)
    assert link.sent[-1][:4] == (wire.PUBLISH, info.mid, "t/a", b"payload")
    assert not info.is_published()
    client.heard((wire.ACK, info.mid, 0))
    client.heard((wire.ACK, 999, 0x87))  # a late one (an earlier client's): still reported
    assert info.is_published()
    (mid, code), (late_mid, refused) = (value for _kind, value in heard)
    assert (mid, code.is_failure, late_mid, refused.is_failure) == (info.mid, False, 999, True)
    assert str(refused) == str(ReasonCode(PacketTypes.PUBACK, identifier=0x87))


def test_connack_messages_and_a_failed_publish_become_paho_callbacks() -> None:
    client, _link, heard = remote_client()
    client.heard((wire.CONNACK, 0x86, PacketTypes.CONNACK))
    client.heard((wire.MESSAGE, "moltbot/s/d/cmd/ping", b"{}"))
    client.heard((wire.PUBLISH_FAILED, 7, int(mqtt.MQTT_ERR_NO_CONN)))
    kinds = [kind for kind, _ in heard]
    assert kinds == ["connect", "message", "disconnect"]
    assert heard[0][1].is_failure and heard[0][1].value == 0x86
    assert heard[1][1] == ("moltbot/s/d/cmd/ping", b"{}")


def test_after_loop_stop_a_client_hears_nothing_as_with_paho() -> None:
    client, _link, heard = remote_client()
    client.loop_stop()
    client.heard((wire.DISCONNECTED, 0, PacketTypes.DISCONNECT))
    client.heard((wire.ACK, 1, 0))
    assert heard == []


def test_the_link_server_answers_builds_and_connects_and_refuses_publishes_without_a_client() -> (
    None
):
    ours, theirs = Pipe()
    server = LinkServer(theirs)
    serving = threading.Thread(target=server.serve, daemon=True)
    serving.start()
    port = free_port()  # nothing listens there
    options = ClientOptions()
    ours.send(
        [
            (wire.PUBLISH, 1, "t", b"x", 1, False, None),
            (wire.BUILD, 1, options, "unit"),
            (wire.CONNECT, 2, "127.0.0.1", port, 30),
        ]
    )
    events: list[tuple[Any, ...]] = []
    while len(events) < 3 and ours.poll(10):
        events.extend(ours.recv())
    ours.close()
    serving.join(10)
    assert events[0] == (wire.PUBLISH_FAILED, 1, int(mqtt.MQTT_ERR_NO_CONN))
    assert events[1] == (wire.ANSWER, 1, None)
    assert events[2][:2] == (wire.ANSWER, 2)
    assert isinstance(events[2][2], ConnectionRefusedError)
    assert not serving.is_alive()  # the channel closed: the server ended
