"""The real Mosquitto fixture: publish/receive with paho, and outages by stop/restart."""

from __future__ import annotations

import queue
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration


def connected_client(broker: MosquittoBroker, client_id: str) -> mqtt.Client:
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def test_message_published_is_received_by_a_subscriber(mosquitto: MosquittoBroker) -> None:
    received: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    subscribed = threading.Event()
    subscriber = connected_client(mosquitto, "sub")
    subscriber.on_message = lambda _c, _u, message: received.put(message)
    subscriber.on_subscribe = lambda *_args: subscribed.set()
    subscriber.subscribe("moltbot/test/#", qos=1)
    assert subscribed.wait(5), "the broker never acknowledged the subscription"
    publisher = connected_client(mosquitto, "pub")
    try:
        publisher.publish("moltbot/test/ping", b"hello", qos=1).wait_for_publish(timeout=5)
        message = received.get(timeout=5)
        assert message.topic == "moltbot/test/ping"
        assert message.payload == b"hello"
    finally:
        for client in (subscriber, publisher):
            client.disconnect()
            client.loop_stop()


def test_broker_can_be_stopped_and_restarted_on_the_same_port(
    mosquitto: MosquittoBroker,
) -> None:
    port = mosquitto.port
    mosquitto.kill()
    assert not mosquitto.running
    probe = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
    with pytest.raises(ConnectionRefusedError):
        probe.connect(mosquitto.host, port)
    mosquitto.start()
    assert mosquitto.port == port
    assert probe.connect(mosquitto.host, port) == mqtt.MQTT_ERR_SUCCESS
    probe.disconnect()
