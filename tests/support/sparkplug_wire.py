"""An independent Sparkplug B decoder (and NCMD encoder) for the tests.

Written from the protobuf wire format and the field numbers of the Sparkplug 3.0 payload
definition, with neither the ``protobuf`` library nor the appliance's ``sparkplug_b.proto``:
if either of those were wrong, the appliance's encoder and this decoder would disagree.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

# Payload: 1 timestamp, 2 metrics, 3 seq, 4 uuid, 5 body.
# Metric: 1 name, 2 alias, 3 timestamp, 4 datatype, 5 is_historical, 6 is_transient, 7 is_null,
# 10 int_value, 11 long_value, 12 float_value, 13 double_value, 14 boolean_value,
# 15 string_value, 16 bytes_value.
INT64, UINT64, DOUBLE, BOOLEAN, STRING = 4, 8, 10, 11, 12


@dataclass
class WireMetric:
    name: str | None = None
    timestamp: int | None = None
    datatype: int | None = None
    is_historical: bool = False
    is_null: bool = False
    value: Any = None


@dataclass
class WirePayload:
    timestamp: int | None = None
    seq: int | None = None
    metrics: list[WireMetric] = field(default_factory=list)

    def metric(self, name: str) -> WireMetric:
        matches = [m for m in self.metrics if m.name == name]
        assert len(matches) == 1, f"{name}: {len(matches)} metrics"
        return matches[0]

    def values(self) -> dict[str, Any]:
        return {m.name: m.value for m in self.metrics if m.name is not None}


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, raw value) in order."""
    out, pos = [], 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unexpected wire type {wire} for field {number}")
        out.append((number, wire, value))
    return out


_VALUE_FIELDS = {
    10: lambda raw: raw,  # int_value
    11: lambda raw: raw,  # long_value
    12: lambda raw: struct.unpack("<f", raw)[0],
    13: lambda raw: struct.unpack("<d", raw)[0],
    14: bool,
    15: lambda raw: raw.decode(),
    16: bytes,
}


def _metric(data: bytes) -> WireMetric:
    metric = WireMetric()
    for number, _wire, raw in _fields(data):
        if number == 1:
            metric.name = raw.decode()
        elif number == 3:
            metric.timestamp = raw
        elif number == 4:
            metric.datatype = raw
        elif number == 5:
            metric.is_historical = bool(raw)
        elif number == 7:
            metric.is_null = bool(raw)
        elif number in _VALUE_FIELDS:
            metric.value = _VALUE_FIELDS[number](raw)
    if metric.datatype == INT64 and isinstance(metric.value, int) and metric.value >= 1 << 63:
        metric.value -= 1 << 64
    return metric


def decode(data: bytes) -> WirePayload:
    payload = WirePayload()
    for number, _wire, raw in _fields(data):
        if number == 1:
            payload.timestamp = raw
        elif number == 2:
            payload.metrics.append(_metric(raw))
        elif number == 3:
            payload.seq = raw
    return payload


def _put_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _put_varint(number << 3 | wire)


def _length_delimited(number: int, data: bytes) -> bytes:
    return _key(number, 2) + _put_varint(len(data)) + data


def encode_command(timestamp_ms: int, metrics: dict[str, bool | str]) -> bytes:
    """An NCMD/DCMD payload with Boolean or String metrics."""
    out = _key(1, 0) + _put_varint(timestamp_ms)
    for name, value in metrics.items():
        body = _length_delimited(1, name.encode())
        if isinstance(value, bool):
            body += _key(4, 0) + _put_varint(BOOLEAN) + _key(14, 0) + _put_varint(int(value))
        else:
            body += _key(4, 0) + _put_varint(STRING) + _length_delimited(15, value.encode())
        out += _length_delimited(2, body)
    return out
