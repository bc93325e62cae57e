"""The Sparkplug B payload module: generated from the committed .proto, and its encoding."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from edge.errors import InputError
from edge.outbox.message import OutboxMessage
from edge.uplink.sparkplug import payloads
from edge.uplink.sparkplug import sparkplug_b_pb2 as committed
from edge.uplink.sparkplug.payloads import DataType, Metric
from tests.support.sparkplug_wire import decode, encode_command

SPARKPLUG_DIR = Path(payloads.__file__).parent


def test_the_committed_payload_module_is_what_protoc_makes_of_the_proto(tmp_path: Path) -> None:
    protoc = pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools (dev extra)")
    status = protoc.main(
        ["protoc", f"-I{SPARKPLUG_DIR}", f"--python_out={tmp_path}", "sparkplug_b.proto"]
    )
    assert status == 0
    assert descriptor_bytes(tmp_path / "sparkplug_b_pb2.py") == descriptor_bytes(
        SPARKPLUG_DIR / "sparkplug_b_pb2.py"
    )
    assert committed.DESCRIPTOR.package == "org.eclipse.tahu.protobuf"


def descriptor_bytes(module: Path) -> bytes:
    """The serialized FileDescriptorProto inside a generated module (the schema, exactly)."""
    found = re.search(r"AddSerializedFile\((b'.*?')\)", module.read_text(), re.S)
    assert found is not None
    value = ast.literal_eval(found.group(1))
    assert isinstance(value, bytes)
    return value


def test_metric_values_of_every_type_survive_the_independent_decoder() -> None:
    raw = payloads.encode(
        [
            Metric("i", DataType.INT64, -3),
            Metric("u", DataType.UINT64, 2**40),
            Metric("d", DataType.DOUBLE, 0.125, timestamp_ms=1_700_000_000_000),
            Metric("b", DataType.BOOLEAN, True),
            Metric("s", DataType.STRING, "crack", historical=True),
            Metric("n", DataType.STRING, None),
        ],
        timestamp_ms=1_700_000_000_123,
        seq=255,
    )
    decoded = decode(raw)
    assert (decoded.timestamp, decoded.seq) == (1_700_000_000_123, 255)
    assert decoded.values() == {"i": -3, "u": 2**40, "d": 0.125, "b": True, "s": "crack", "n": None}
    assert [m.datatype for m in decoded.metrics] == [4, 8, 10, 11, 12, 12]
    assert decoded.metric("d").timestamp == 1_700_000_000_000
    assert decoded.metric("s").is_historical and decoded.metric("n").is_null


def test_commands_from_an_independent_encoder_decode_and_garbage_is_an_input_error() -> None:
    raw = encode_command(1, {"Node Control/Rebirth": True, "Command/capture": '{"part_id": "A"}'})
    assert payloads.decode_command(raw, "t") == {
        "Node Control/Rebirth": True,
        "Command/capture": '{"part_id": "A"}',
    }
    with pytest.raises(InputError, match="not a Sparkplug B payload"):
        payloads.decode_command(b"\xff\xff\xff", "spBv1.0/g/NCMD/n")


def test_a_defect_event_becomes_the_last_decision_metrics_and_its_class_count() -> None:
    message = OutboxMessage(
        id="e1", seq=7, kind="defect", topic="t", qos=1, priority=30,
        payload={"class": "spot", "score": 0.9, "part_id": "P-9", "frame": "f", "model": "m@1"},
        created_wall=0, created_trusted=True, created_boot_id="b", created_boottime=0,
        created_elapsed=0,
    )  # fmt: skip
    metrics = payloads.event_metrics(message, timestamp_ms=5, historical=True, count=4)
    by_name = {m.name: m for m in metrics}
    assert by_name["Count/spot"].value == 4
    assert by_name["Last Decision/Part Id"].value == "P-9"
    assert all(m.historical and m.timestamp_ms == 5 for m in metrics)
