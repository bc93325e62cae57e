"""Sparkplug B payloads: our metrics in, protobuf bytes out (and back, for commands).

Encoded with the ``protobuf`` runtime and the module generated from ``sparkplug_b.proto``.
Metric names and types are the appliance's Sparkplug interface; the README lists them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from google.protobuf.message import DecodeError

from edge.errors import InputError
from edge.outbox.message import OutboxMessage
from edge.uplink.sparkplug import sparkplug_b_pb2 as pb

MetricValue = str | float | int | bool | None


class DataType(IntEnum):
    """The Sparkplug data types this appliance uses (numbers from the specification)."""

    INT64 = 4
    UINT64 = 8
    DOUBLE = 10
    BOOLEAN = 11
    STRING = 12


@dataclass(frozen=True)
class Metric:
    name: str
    datatype: DataType
    value: MetricValue  # None: the metric exists but has no value yet (is_null)
    timestamp_ms: int | None = None
    historical: bool = False


# Metric names: node level (NBIRTH/NDATA/NCMD) and device level (DBIRTH/DDATA/DCMD).
BD_SEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"
SOFTWARE = "Node Info/Software"
OUTBOX_DEPTH = "Outbox/Depth"
UPLINK_STATE = "Uplink/State"
UPLINK_CONNECTS = "Uplink/Connects"
MODEL = "Model"
LAST_CLASS = "Last Decision/Class"
LAST_SCORE = "Last Decision/Score"
LAST_PART_ID = "Last Decision/Part Id"
LAST_FRAME = "Last Decision/Frame"
LAST_EVENT_ID = "Last Decision/Event Id"
COUNT_PREFIX = "Count/"
EVENT_PREFIX = "Events/"
COMMAND_PREFIX = "Command/"
STANDARD_EVENT_KINDS = ("voice", "status", "error", "telemetry", "update")


def encode(metrics: list[Metric], *, timestamp_ms: int, seq: int | None) -> bytes:
    payload = pb.Payload(timestamp=timestamp_ms)
    if seq is not None:
        payload.seq = seq
    for metric in metrics:
        _add_metric(payload, metric)
    return bytes(payload.SerializeToString())


def _add_metric(payload: pb.Payload, metric: Metric) -> None:
    item = payload.metrics.add(name=metric.name, datatype=int(metric.datatype))
    if metric.timestamp_ms is not None:
        item.timestamp = metric.timestamp_ms
    if metric.historical:
        item.is_historical = True
    value = metric.value
    if value is None:
        item.is_null = True
    elif metric.datatype == DataType.STRING:
        item.string_value = str(value)
    elif metric.datatype == DataType.DOUBLE:
        item.double_value = float(value)
    elif metric.datatype == DataType.BOOLEAN:
        item.boolean_value = bool(value)
    else:  # INT64/UINT64 travel as uint64 (two's complement for negative Int64)
        item.long_value = int(value) & 0xFFFF_FFFF_FFFF_FFFF


def decode_command(raw: bytes, topic: str) -> dict[str, MetricValue]:
    """An NCMD/DCMD payload as metric name → value (only the types we accept)."""
    try:
        payload = pb.Payload.FromString(raw)
    except DecodeError as exc:
        raise InputError(
            f"not a Sparkplug B payload: {exc}",
            where=topic,
            hint="send a Sparkplug B protobuf payload",
        ) from exc
    values: dict[str, MetricValue] = {}
    for metric in payload.metrics:
        kind = metric.WhichOneof("value")
        values[metric.name] = None if kind is None else getattr(metric, kind)
    return values


def event_metrics(
    message: OutboxMessage, *, timestamp_ms: int, historical: bool, count: int
) -> list[Metric]:
    """The DDATA metrics of one outbox message; ``count``: this class's count after it."""
    data = message.payload

    def metric(name: str, datatype: DataType, value: MetricValue) -> Metric:
        return Metric(name, datatype, value, timestamp_ms, historical)

    if message.kind != "defect":
        envelope = json.dumps({"id": message.id, "kind": message.kind, "data": data})
        return [metric(f"{EVENT_PREFIX}{message.kind}", DataType.STRING, envelope)]
    label = str(data.get("class"))
    return [
        metric(LAST_CLASS, DataType.STRING, label),
        metric(LAST_SCORE, DataType.DOUBLE, _number(data.get("score"))),
        metric(LAST_PART_ID, DataType.STRING, data.get("part_id")),
        metric(LAST_FRAME, DataType.STRING, data.get("frame")),
        metric(LAST_EVENT_ID, DataType.STRING, message.id),
        metric(MODEL, DataType.STRING, data.get("model")),
        metric(f"{COUNT_PREFIX}{label}", DataType.UINT64, count),
    ]


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None
