"""What the uplink says on the wire: today's JSON topics, or Sparkplug B.

The uplink (``sync.py``) owns the connection, the in-flight window and the outbox; a *dialect*
decides the last will, what is published when a session starts and ends, how an outbox message
becomes a PUBLISH, when data may flow, and what incoming messages mean. Each session calls
:meth:`Dialect.will` once before CONNECT, then :meth:`Dialect.begin` after CONNACK.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.outbox.clock import TimeSource
from edge.outbox.message import OutboxMessage
from edge.uplink.link_client import LinkClient, PublishInfo
from edge.uplink.topics import AVAILABILITY_OFFLINE, AVAILABILITY_ONLINE, TopicScheme


class Outgoing(NamedTuple):
    """A PUBLISH as a dialect makes it (NamedTuples, these two: one of each per message)."""

    topic: str
    payload: bytes
    qos: int
    properties: Properties | None = None


class Stamped(NamedTuple):
    """An outbox message with what the uplink knows about it at send time."""

    message: OutboxMessage
    created_at: float  # wall time, seconds (corrected when the clock was not synced)
    time_source: TimeSource
    remaining_s: float  # retention left


@dataclass(frozen=True)
class InspectionModel:
    """What a dialect may announce about the serving model (Sparkplug's DBIRTH)."""

    ref: str  # name@version
    defect_labels: tuple[str, ...]


ModelInfo = Callable[[], "InspectionModel | None"]


@dataclass
class Reaction:
    """What an incoming message asks of the session."""

    commands: list[tuple[str, bytes]] = field(default_factory=list)  # (name, JSON payload)
    end_session: bool = False


class Dialect(Protocol):
    # Whether a live event may reach the broker before backlog messages encoded earlier (the
    # live lane going ahead in the MQTT client's queue). Not where the encoding numbers the
    # messages in sending order (Sparkplug's ``seq``).
    live_may_overtake: bool

    def will(self, client: LinkClient) -> None: ...
    def begin(self, client: LinkClient) -> None: ...
    def ready(self) -> bool: ...
    def encode(self, client: LinkClient, item: Stamped) -> Outgoing: ...
    def on_message(self, client: LinkClient, topic: str, payload: bytes) -> Reaction: ...
    def tick(self, client: LinkClient) -> None: ...
    def goodbye(self, client: LinkClient) -> PublishInfo: ...


class JsonDialect:
    """The default: one topic per event kind, a JSON envelope, a retained availability string."""

    live_may_overtake = True  # consumers order by the envelope's created_at, not arrival

    def __init__(self, topics: TopicScheme, *, mqtt_v5: bool) -> None:
        self.topics = topics
        self.mqtt_v5 = mqtt_v5

    def will(self, client: LinkClient) -> None:
        client.will_set(self.topics.availability, AVAILABILITY_OFFLINE, qos=1, retain=True)

    def begin(self, client: LinkClient) -> None:
        client.publish(self.topics.availability, AVAILABILITY_ONLINE, qos=1, retain=True)
        client.subscribe(self.topics.command_filter, qos=1)

    def ready(self) -> bool:
        return True

    def encode(self, client: LinkClient, item: Stamped) -> Outgoing:
        message = item.message
        payload = message.envelope(
            device=self.topics.device,
            site=self.topics.site,
            created_at=item.created_at,
            time_source=item.time_source,
        )
        properties = json_properties(message, item.remaining_s) if self.mqtt_v5 else None
        return Outgoing(message.topic, payload, message.qos, properties)

    def on_message(self, client: LinkClient, topic: str, payload: bytes) -> Reaction:
        name = self.topics.command_name(topic)
        return Reaction(commands=[(name, payload)] if name else [])

    def tick(self, client: LinkClient) -> None:
        return None

    def goodbye(self, client: LinkClient) -> PublishInfo:
        return client.publish(self.topics.availability, AVAILABILITY_OFFLINE, qos=1, retain=True)


class PackedPublishProperties(Properties):
    """MQTT 5 PUBLISH properties whose bytes are made once, here.

    paho's ``Properties`` checks every attribute set against its whole table of names and packs
    them again inside each publish: about 100 µs a message in the drain's profile, more than
    the rest of our work per message. paho only ever calls ``pack()`` (and ``str()`` when it
    logs), so this subclass answers ``pack()`` from bytes packed by :func:`json_properties`,
    and ``str()`` — rarely asked — by letting paho unpack them.
    """

    _packed: bytes

    def __init__(self, packed: bytes) -> None:  # no super(): nothing of it is used
        self.__dict__.update(packetType=PacketTypes.PUBLISH, _packed=packed)

    def pack(self) -> bytes:
        return self._packed

    def __str__(self) -> str:
        unpacked = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        unpacked.unpack(self._packed)  # type: ignore[no-untyped-call]
        return str(unpacked)


MAX_EXPIRY_S = 2**32 - 1
_JSON_CONTENT = (
    b"\x01\x01"  # Payload Format Indicator: UTF-8
    b"\x03" + len(b"application/json").to_bytes(2, "big") + b"application/json"  # Content Type
)


def _utf8(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def _varint(value: int) -> bytes:
    if value < 128:  # one byte: every JSON message's properties
        return bytes((value,))
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


_EXPIRY = _JSON_CONTENT[:2] + b"\x02"  # then the Message Expiry Interval's four bytes
_MESSAGE_ID = _JSON_CONTENT[2:] + b"\x26" + _utf8("message-id")  # User Property, then the id
_KIND = b"\x26" + _utf8("kind")  # User Property, then the kind


@functools.lru_cache(maxsize=256)
def _kind_property(kind: str) -> bytes:
    return _KIND + _utf8(kind)


def json_properties(message: OutboxMessage, remaining_s: float) -> Properties:
    """Message expiry (the retention left), the message id and kind, and the content type.

    Packed in paho's own order (by property identifier), byte for byte what
    ``Properties.pack()`` gives for the same values.
    """
    expiry = min(MAX_EXPIRY_S, max(1, int(remaining_s)))
    body = (
        _EXPIRY
        + expiry.to_bytes(4, "big")
        + _MESSAGE_ID
        + _utf8(message.id)
        + _kind_property(message.kind)
    )
    return PackedPublishProperties(_varint(len(body)) + body)
