"""The outbox's message: what is stored, and the envelope consumers receive.

Stored as UTF-8 JSON inside diskcache's SQLite table (never pickled), so an outbox written by
one version of the runtime is readable by the next and by ``sqlite3`` in an emergency. A row is
two lines: the message's fields as one JSON object, then the payload's JSON text exactly as it
goes on the wire (inside the envelope's ``data``). Reading a backlog therefore parses only the
small header, and the drain copies the payload bytes into the envelope without decoding and
encoding them again. Rows written before this layout (one JSON object, payload inside) are
still read.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from typing import Any

from edge.errors import MessageRejectedError
from edge.outbox.clock import TimeSource

KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_encode_payload = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode
_quote = json.encoder.encode_basestring  # a JSON string literal (the C encoder)
_decode = json.JSONDecoder().decode  # of text: a stored header is UTF-8 (``json.loads`` guesses)
PAYLOAD_SEPARATOR = b"\n"  # JSON text never holds a raw newline: it is escaped inside strings


def _number(value: float) -> str:
    """A number as the JSON encoder writes it."""
    if isinstance(value, float) and math.isfinite(value):
        return float.__repr__(value)
    return _encode(value)


def new_message_id() -> str:
    """A random (version 4) UUID as text: ``str(uuid.uuid4())`` at a third of its cost."""
    digits = bytearray(os.urandom(16))
    digits[6] = (digits[6] & 0x0F) | 0x40  # version 4
    digits[8] = (digits[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = digits.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


@dataclass(frozen=True, init=False)
class OutboxMessage:
    """One accepted event, durable from the moment ``put`` returns until its PUBACK.

    ``payload_json`` is the payload's JSON text (what the envelope's ``data`` holds);
    ``payload``, the decoded object, is made only when something asks for it.
    """

    id: str
    seq: int
    kind: str
    topic: str
    payload_json: bytes = field(repr=False)
    qos: int
    priority: int
    created_wall: float
    created_trusted: bool
    created_boot_id: str
    created_boottime: float
    created_elapsed: float

    def __init__(  # the stored fields, by keyword
        self,
        *,
        id: str,
        seq: int,
        kind: str,
        topic: str,
        qos: int,
        priority: int,
        created_wall: float,
        created_trusted: bool,
        created_boot_id: str,
        created_boottime: float,
        created_elapsed: float,
        payload: dict[str, Any] | None = None,
        payload_json: bytes | None = None,
    ) -> None:
        if payload_json is None:
            payload = {} if payload is None else payload
            payload_json = _encode_payload(payload).encode()
        if payload is not None:
            self.__dict__["payload"] = payload  # what ``cached_property`` would store
        values = {
            "id": id,
            "seq": seq,
            "kind": kind,
            "topic": topic,
            "payload_json": payload_json,
            "qos": qos,
            "priority": priority,
            "created_wall": created_wall,
            "created_trusted": created_trusted,
            "created_boot_id": created_boot_id,
            "created_boottime": created_boottime,
            "created_elapsed": created_elapsed,
        }
        self.__dict__.update(values)  # frozen: no __setattr__

    @cached_property
    def payload(self) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(self.payload_json)
        return decoded

    def header(self) -> dict[str, Any]:
        """The stored fields but the payload, in declaration order."""
        return {
            "id": self.id,
            "seq": self.seq,
            "kind": self.kind,
            "topic": self.topic,
            "qos": self.qos,
            "priority": self.priority,
            "created_wall": self.created_wall,
            "created_trusted": self.created_trusted,
            "created_boot_id": self.created_boot_id,
            "created_boottime": self.created_boottime,
            "created_elapsed": self.created_elapsed,
        }

    def to_json(self) -> dict[str, Any]:
        """Every field with the payload decoded, in declaration order (listings, the API)."""
        header = self.header()
        return {
            **{key: header[key] for key in ("id", "seq", "kind", "topic")},
            "payload": self.payload,
            **{key: header[key] for key in list(header)[4:]},
        }

    def to_bytes(self) -> bytes:
        """The stored form: the header's JSON, a newline, the payload's JSON.

        The header is byte for byte what the compact JSON encoder gives for :meth:`header`,
        written out field by field (a put's hottest Python: half the encoder's time).
        """
        return stored_bytes(
            self.id,
            self.seq,
            event_fields_json(self.kind, self.topic, self.qos, self.priority),
            stamp_fields_json(
                self.created_wall,
                self.created_trusted,
                self.created_boot_id,
                self.created_boottime,
                self.created_elapsed,
            ),
            self.payload_json,
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> OutboxMessage:
        cut = raw.find(PAYLOAD_SEPARATOR)
        if cut < 0:  # the earlier layout: one object with the payload inside
            fields = json.loads(raw)
            return cls(**fields)
        message = cls.__new__(cls)  # the header holds every field but the payload: no checks
        message.__dict__.update(_decode(raw[:cut].decode()), payload_json=raw[cut + 1 :])
        return message

    def envelope(
        self, *, device: str, site: str, created_at: float, time_source: TimeSource
    ) -> bytes:
        """The MQTT payload: the event's data plus the id consumers de-duplicate on.

        Byte for byte what ``json.dumps`` (compact, not ASCII-escaped) gives for
        ``{"id", "kind", "device", "site", "created_at", "time_source", "data"}``; the data
        is copied in as stored.
        """
        stamp = datetime.fromtimestamp(created_at, timezone.utc).isoformat(timespec="milliseconds")
        head = (
            f'{{"id":{_quote(self.id)},"kind":{_quote(self.kind)},"device":{_quote(device)},'
            f'"site":{_quote(site)},"created_at":"{stamp}","time_source":"{time_source}","data":'
        )
        return head.encode() + self.payload_json + b"}"


# The stored form in three parts, so that a put renders the parts its messages share once: the
# event's fields (kind, topic, qos, priority) at accept, the clocks once per transaction.


def event_fields_json(kind: str, topic: str, qos: int, priority: int) -> str:
    """The header's event fields, as the compact JSON encoder writes them (no braces)."""
    return (
        f'"kind":{_quote(kind)},"topic":{_quote(topic)},"qos":{int(qos)},"priority":{int(priority)}'
    )


def stamp_fields_json(
    wall: float, trusted: bool, boot_id: str, boottime: float, elapsed: float
) -> str:
    """The header's clock fields (``created_*``), as the compact JSON encoder writes them."""
    return (
        f'"created_wall":{_number(wall)},"created_trusted":{"true" if trusted else "false"},'
        f'"created_boot_id":{_quote(boot_id)},"created_boottime":{_number(boottime)},'
        f'"created_elapsed":{_number(elapsed)}'
    )


def stored_bytes(
    message_id: str, seq: int, event_fields: str, stamp_fields: str, payload_json: bytes
) -> bytes:
    """A stored row from its parts: ``{"id","seq",<event fields>,<clock fields>}``, a newline,
    the payload's JSON (what :meth:`OutboxMessage.to_bytes` gives)."""
    header = f'{{"id":{_quote(message_id)},"seq":{int(seq)},{event_fields},{stamp_fields}}}'
    return header.encode() + PAYLOAD_SEPARATOR + payload_json


def validate_kind(kind: str) -> str:
    if not KIND_PATTERN.fullmatch(kind):
        raise MessageRejectedError(
            f"invalid event kind {kind!r}: it becomes an MQTT topic level",
            where="kind",
            hint="use lower-case letters, digits and '_' (e.g. defect, voice, status, telemetry);"
            " '/', '+', '#' and spaces are not allowed",
        )
    return kind


def validate_payload(payload: object) -> dict[str, Any]:
    """The payload must be a JSON object that round-trips; returns the normalised object."""
    decoded: dict[str, Any] = json.loads(encode_payload(payload))
    return decoded


def encode_payload(payload: object) -> bytes:
    """A JSON object's compact text, as stored and sent; ``MessageRejectedError`` for anything
    else (not an object, NaN or infinity, values JSON has no form for)."""
    if not isinstance(payload, dict):
        raise MessageRejectedError(
            f"payload must be a JSON object, got {type(payload).__name__}",
            where="payload",
            hint='wrap the value in an object, e.g. {"value": 42}',
        )
    try:
        return _encode_payload(payload).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise MessageRejectedError(
            f"payload is not JSON-serialisable: {exc}",
            where="payload",
            hint="use only strings, numbers (not NaN/inf), booleans, null, lists and objects",
        ) from exc
