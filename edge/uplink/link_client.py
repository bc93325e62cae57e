"""What the uplink and its dialects use of an MQTT client.

Two kinds satisfy it: a paho client in this process (``connection.build_client``) and a
:class:`~edge.uplink.remote_client.RemoteClient`, whose paho client runs in the link process.
The callbacks have paho 2.x's VERSION2 signatures and run on a thread of the client's own.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from paho.mqtt.properties import Properties


class PublishInfo(Protocol):
    """What ``publish`` answers: paho's ``MQTTMessageInfo`` as far as the uplink reads it."""

    @property
    def mid(self) -> int: ...

    @property
    def rc(self) -> int: ...

    def is_published(self) -> bool: ...


class LinkClient(Protocol):
    on_connect: Any
    on_disconnect: Any
    on_publish: Any
    on_message: Any

    def will_set(
        self,
        topic: str,
        payload: str | bytes | None = None,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None: ...

    def max_inflight_messages_set(self, inflight: int) -> None: ...

    def max_queued_messages_set(self, queue_size: int) -> Any: ...

    def connect(self, host: str, port: int = 1883, keepalive: int = 60) -> Any: ...

    def loop_start(self) -> Any: ...

    def loop_stop(self) -> Any: ...

    def disconnect(self) -> Any: ...

    def publish(
        self,
        topic: str,
        payload: str | bytes | None = None,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> PublishInfo: ...

    def subscribe(self, topic: str, qos: int = 0) -> Any: ...


@runtime_checkable
class FirstPublisher(Protocol):
    """A client that can send a publish ahead of those still waiting for the in-flight window
    (the link process's: ``publish(..., first=True)``): the live lane's events overtake the
    backlog handed over before them; and that can drop what waits unsent (before a goodbye).
    paho's own client can do neither; its queue is first in, first out."""

    def forget_waiting(self) -> None: ...

    def publish(
        self,
        topic: str,
        payload: str | bytes | None = None,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
        *,
        first: bool = False,
    ) -> PublishInfo: ...
