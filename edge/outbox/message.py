"""The outbox's message: what is stored, and the envelope consumers receive.

Stored as UTF-8 JSON inside diskcache's SQLite table (never pickled), so an outbox written by
one version of the runtime is readable by the next and by ``sqlite3`` in an emergency.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edge.errors import MessageRejectedError
from edge.outbox.clock import TimeSource

KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


@dataclass(frozen=True)
class OutboxMessage:
    """One accepted event, durable from the moment ``put`` returns until its PUBACK."""

    id: str
    seq: int
    kind: str
    topic: str
    payload: dict[str, Any]
    qos: int
    priority: int
    created_wall: float
    created_trusted: bool
    created_boot_id: str
    created_boottime: float
    created_elapsed: float

    def to_bytes(self) -> bytes:
        """The stored form: the fields in declaration order (what ``asdict`` gave, without its
        deep copy of the payload, which cost more than the encoding itself)."""
        return _encode(
            {
                "id": self.id,
                "seq": self.seq,
                "kind": self.kind,
                "topic": self.topic,
                "payload": self.payload,
                "qos": self.qos,
                "priority": self.priority,
                "created_wall": self.created_wall,
                "created_trusted": self.created_trusted,
                "created_boot_id": self.created_boot_id,
                "created_boottime": self.created_boottime,
                "created_elapsed": self.created_elapsed,
            }
        ).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> OutboxMessage:
        return cls(**json.loads(raw))

    def envelope(
        self, *, device: str, site: str, created_at: float, time_source: TimeSource
    ) -> bytes:
        """The MQTT payload: the event's data plus the id consumers de-duplicate on."""
        return json.dumps(
            {
                "id": self.id,
                "kind": self.kind,
                "device": device,
                "site": site,
                "created_at": datetime.fromtimestamp(created_at, UTC).isoformat(
                    timespec="milliseconds"
                ),
                "time_source": time_source,
                "data": self.payload,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()


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
    return normalise_payload(payload)[0]


def normalise_payload(payload: object) -> tuple[dict[str, Any], int]:
    """:func:`validate_payload`, with the length of the payload's JSON text."""
    if not isinstance(payload, dict):
        raise MessageRejectedError(
            f"payload must be a JSON object, got {type(payload).__name__}",
            where="payload",
            hint='wrap the value in an object, e.g. {"value": 42}',
        )
    try:
        text = json.dumps(payload, allow_nan=False)
        normalised: dict[str, Any] = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise MessageRejectedError(
            f"payload is not JSON-serialisable: {exc}",
            where="payload",
            hint="use only strings, numbers (not NaN/inf), booleans, null, lists and objects",
        ) from exc
    return normalised, len(text)
