"""MQTT 5 PUBLISH properties packed by the uplink, checked against paho's own packing."""

from __future__ import annotations

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.outbox.message import OutboxMessage
from edge.uplink.dialect import json_properties


def message(kind: str, message_id: str) -> OutboxMessage:
    return OutboxMessage(
        id=message_id,
        seq=1,
        kind=kind,
        topic=f"moltbot/site/dev/{kind}",
        payload={},
        qos=1,
        priority=0,
        created_wall=0.0,
        created_trusted=True,
        created_boot_id="boot",
        created_boottime=0.0,
        created_elapsed=0.0,
    )


@pytest.mark.parametrize(
    ("kind", "message_id", "remaining_s"),
    [
        ("defect", "0b8c1c6e-5f0e-4d8e-9a47-1d2f3c4b5a69", 259_199.6),
        ("telemetry", "x", 0.2),  # expiry never below 1 s
        ("voice", "é" * 200, 2.0**40),  # a long non-ASCII id; expiry capped at 32 bits
    ],
)
def test_packed_properties_are_byte_for_byte_what_paho_packs(
    kind: str, message_id: str, remaining_s: float
) -> None:
    expected = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    expected.MessageExpiryInterval = min(2**32 - 1, max(1, int(remaining_s)))
    expected.UserProperty = [("message-id", message_id), ("kind", kind)]
    expected.ContentType = "application/json"
    expected.PayloadFormatIndicator = 1
    ours = json_properties(message(kind, message_id), remaining_s)
    assert ours.pack() == expected.pack()  # type: ignore[no-untyped-call]
    assert str(ours) == str(expected)
    decoded = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    decoded.unpack(ours.pack())  # type: ignore[no-untyped-call]
    assert decoded.UserProperty == [("message-id", message_id), ("kind", kind)]
