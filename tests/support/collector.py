"""A real paho subscriber that records what a consumer in the plant would receive."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    user_properties: dict[str, str]
    expiry_interval: int | None
    at: float

    def json(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.payload)
        return decoded


def _envelope_id(payload: bytes) -> str | None:
    if not payload.startswith(b"{"):
        return None
    try:
        decoded = json.loads(payload)
    except ValueError:
        return None
    message_id = decoded.get("id") if isinstance(decoded, dict) else None
    return message_id if isinstance(message_id, str) else None


class Collector:
    """Subscribes (MQTT 5) to a filter and keeps every message, in arrival order."""

    def __init__(
        self,
        host: str,
        port: int,
        topic_filter: str,
        client_id: str = "collector",
        *,
        persistent: bool = False,
    ) -> None:
        """``persistent``: a session the broker keeps (and queues for) while we are away."""
        self.messages: list[Received] = []
        self._ids: list[str] = []
        self._id_set: set[str] = set()
        self._lock = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        self.client.on_connect = lambda client, *_a: client.subscribe(topic_filter, qos=1)
        properties = None
        if persistent:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = 3600
        self.client.connect(host, port, clean_start=not persistent, properties=properties)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError(f"collector could not subscribe to {topic_filter}")

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        properties = getattr(message, "properties", None)
        user = dict(getattr(properties, "UserProperty", []) or [])
        expiry = getattr(properties, "MessageExpiryInterval", None)
        received = Received(
            message.topic,
            bytes(message.payload),
            bool(message.retain),
            user,
            expiry,
            time.monotonic(),
        )
        message_id = _envelope_id(received.payload)
        with self._lock:
            self.messages.append(received)
            if message_id is not None:
                self._ids.append(message_id)
                self._id_set.add(message_id)
            self._lock.notify_all()

    def events(self) -> list[Received]:
        """Messages with the uplink's JSON envelope (not availability strings or commands)."""
        with self._lock:
            return [m for m in self.messages if _envelope_id(m.payload) is not None]

    def event_ids(self) -> list[str]:
        with self._lock:
            return list(self._ids)

    def wait_for_ids(self, ids: set[str], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not ids <= self._id_set:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def wait_for(self, predicate: Any, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
