"""Sparkplug B on a real Mosquitto, decoded by the tests' own wire decoder (not protobuf).

Checks the Edge Node session rules of Sparkplug 3.0: NBIRTH (seq 0, bdSeq) → DBIRTH → DDATA with
seq +1 mod 256; the last will is an NDEATH with the birth's bdSeq, bdSeq +1 per connection and
kept across restarts; rebirth on NCMD; and primary-host STATE: data held while the host is
offline, then delivered in order, marked historical, nothing lost.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.outbox.store import Outbox
from edge.uplink.dialect import InspectionModel
from edge.uplink.sync import Uplink
from edge.wiring import build_uplink
from tests.conftest import ConfigFactory
from tests.integration.uplink_rig import collecting, open_outbox, wait_until
from tests.support.collector import Collector
from tests.support.mosquitto import MosquittoBroker
from tests.support.sparkplug_wire import WirePayload, decode, encode_command

pytestmark = pytest.mark.integration
NODE = "spBv1.0/test-site/{type}/test-device"
DEVICE = NODE + "/inspection"
MODEL = InspectionModel("defect@1", ("scratch", "spot", "crack"))
FAST = {"reconnect_min_s": 0.2, "reconnect_max_s": 0.5, "connect_timeout_s": 3.0}


def sparkplug_config(make_config: ConfigFactory, **sparkplug: object) -> object:
    settings = {"node_data_interval_s": 3600, **sparkplug}
    return make_config(uplink={"mode": "sparkplug", "sparkplug": settings, **FAST})


def defect(label: str, part_id: str) -> dict[str, object]:
    return {"class": label, "score": 0.99, "part_id": part_id, "frame": part_id, "mode": "part",
            "model": "defect@1"}  # fmt: skip


def received(collector: Collector) -> list[tuple[str, WirePayload]]:
    """(message type, payload) of what the node published, in arrival order."""
    with collector._lock:
        messages = list(collector.messages)
    return [
        (m.topic.split("/")[2], decode(m.payload))
        for m in messages
        if m.topic.split("/")[1] != "STATE" and m.topic.split("/")[2] not in ("NCMD", "DCMD")
    ]


def of_type(collector: Collector, kind: str) -> list[WirePayload]:
    return [payload for name, payload in received(collector) if name == kind]


@contextmanager
def node(config: object, outbox: Outbox) -> Iterator[Uplink]:
    uplink = build_uplink(config, outbox, model_info=lambda: MODEL)  # type: ignore[arg-type]
    uplink.start()
    try:
        yield uplink
    finally:
        uplink.stop()


def test_births_ddata_and_death_follow_the_seq_and_bdseq_rules(
    make_config: ConfigFactory, mosquitto: MosquittoBroker
) -> None:
    config = sparkplug_config(make_config)
    outbox = open_outbox(config)  # type: ignore[arg-type]
    with collecting(mosquitto, "spBv1.0/#") as consumer:
        with node(config, outbox) as uplink:
            assert uplink.wait_connected(10)
            ids = [outbox.put("defect", defect("crack", f"P-{n}")).id for n in range(3)]
            ids.append(outbox.put("voice", {"text": "status", "intent": "status"}).id)
            wait_until(lambda: len(of_type(consumer, "DDATA")) == 4, 10, "4 DDATA")
            wait_until(lambda: len(outbox) == 0, 10, "the outbox to drain")
        wait_until(lambda: of_type(consumer, "NDEATH"), 10, "NDEATH")
    messages = received(consumer)
    assert [name for name, _ in messages] == ["NBIRTH", "DBIRTH"] + ["DDATA"] * 4 + ["NDEATH"]
    assert [payload.seq for _, payload in messages[:-1]] == [0, 1, 2, 3, 4, 5]
    nbirth, dbirth, *ddata, ndeath = (payload for _, payload in messages)
    assert ndeath.seq is None
    assert ndeath.metric("bdSeq").value == nbirth.metric("bdSeq").value
    assert nbirth.metric("Node Control/Rebirth").value is False
    assert nbirth.metric("Outbox/Depth").datatype == 8
    assert nbirth.metric("Uplink/State").value == "connected"
    births = dbirth.values()
    assert births["Model"] == "defect@1"
    assert {births[f"Count/{label}"] for label in MODEL.defect_labels} == {0}
    assert dbirth.metric("Last Decision/Class").is_null
    assert "Events/voice" in births and "Command/ping" in births
    first = ddata[0]
    assert first.values()["Last Decision/Class"] == "crack"
    assert first.values()["Last Decision/Part Id"] == "P-0"
    assert first.values()["Last Decision/Event Id"] == ids[0]
    assert first.metric("Last Decision/Score").value == pytest.approx(0.99)
    assert not any(m.is_historical for m in first.metrics)
    assert [p.values()["Count/crack"] for p in ddata[:3]] == [1, 2, 3]
    voice = json.loads(ddata[3].values()["Events/voice"])
    assert (voice["id"], voice["data"]["intent"]) == (ids[3], "status")
    assert {m.name for p in ddata for m in p.metrics} <= set(births)
    outbox.close()


def test_rebirth_on_command_restarts_seq_with_the_same_bdseq_and_current_values(
    make_config: ConfigFactory, mosquitto: MosquittoBroker
) -> None:
    config = sparkplug_config(make_config)
    outbox = open_outbox(config)  # type: ignore[arg-type]
    with collecting(mosquitto, "spBv1.0/#") as consumer, node(config, outbox) as uplink:
        assert uplink.wait_connected(10)
        outbox.put("defect", defect("spot", "P-1"))
        wait_until(lambda: of_type(consumer, "DDATA"), 10, "DDATA")
        command = encode_command(int(time.time() * 1000), {"Node Control/Rebirth": True})
        consumer.client.publish(NODE.format(type="NCMD"), command, qos=1)
        wait_until(lambda: len(of_type(consumer, "DBIRTH")) == 2, 10, "a second DBIRTH")
        outbox.put("defect", defect("spot", "P-2"))
        wait_until(lambda: len(of_type(consumer, "DDATA")) == 2, 10, "a second DDATA")
    names = [(name, payload.seq) for name, payload in received(consumer)]
    assert names[:6] == [
        ("NBIRTH", 0), ("DBIRTH", 1), ("DDATA", 2), ("NBIRTH", 0), ("DBIRTH", 1), ("DDATA", 2)
    ]  # fmt: skip
    births = of_type(consumer, "NBIRTH")
    assert births[0].metric("bdSeq").value == births[1].metric("bdSeq").value
    reborn = of_type(consumer, "DBIRTH")[1].values()
    assert (reborn["Last Decision/Part Id"], reborn["Count/spot"]) == ("P-1", 1)
    assert of_type(consumer, "DDATA")[1].values()["Count/spot"] == 2
    outbox.close()


def test_the_will_is_an_ndeath_and_bdseq_grows_per_connection_and_across_restarts(
    make_config: ConfigFactory, mosquitto: MosquittoBroker
) -> None:
    config = sparkplug_config(make_config)
    outbox = open_outbox(config)  # type: ignore[arg-type]
    with collecting(mosquitto, "spBv1.0/#") as consumer:
        with node(config, outbox) as uplink:
            assert uplink.wait_connected(10)
            wait_until(lambda: of_type(consumer, "DBIRTH"), 10, "the first births")
            # another client with the node's client id takes the session over: the broker
            # drops the node's connection without a DISCONNECT and publishes its will
            intruder = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-device")
            intruder.connect(mosquitto.host, mosquitto.port)
            intruder.loop_start()
            wait_until(lambda: of_type(consumer, "NDEATH"), 10, "the will (NDEATH)")
            intruder.disconnect()
            intruder.loop_stop()
            wait_until(lambda: len(of_type(consumer, "NBIRTH")) == 2, 15, "a new NBIRTH")
        with node(config, outbox):  # a restart of the appliance
            wait_until(lambda: len(of_type(consumer, "NBIRTH")) == 3, 10, "a third NBIRTH")
    births = [p.metric("bdSeq").value for p in of_type(consumer, "NBIRTH")]
    deaths = [p.metric("bdSeq").value for p in of_type(consumer, "NDEATH")]
    assert births[1] == (births[0] + 1) % 256 and births[2] == (births[1] + 1) % 256
    assert deaths[0] == births[0]  # the will carried the first birth's bdSeq
    assert deaths[1] == births[1]  # the clean stop published the second one's
    outbox.close()


def publish_state(broker: MosquittoBroker, host_id: str, online: bool, timestamp: int) -> None:
    host = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"host-{time.monotonic_ns()}")
    host.connect(broker.host, broker.port)
    host.loop_start()
    body = json.dumps({"online": online, "timestamp": timestamp})
    host.publish(f"spBv1.0/STATE/{host_id}", body, qos=1, retain=True).wait_for_publish(5)
    host.disconnect()
    host.loop_stop()


def test_data_waits_while_the_primary_host_is_offline_then_arrives_historical_in_order(
    make_config: ConfigFactory, mosquitto: MosquittoBroker
) -> None:
    host_id = f"scada{time.monotonic_ns()}"
    config = sparkplug_config(make_config, primary_host_id=host_id)
    outbox = open_outbox(config)  # type: ignore[arg-type]
    try:
        with collecting(mosquitto, "spBv1.0/#") as consumer, node(config, outbox) as uplink:
            time.sleep(0.5)
            assert not of_type(consumer, "NBIRTH")  # no birth before the host is online
            publish_state(mosquitto, host_id, True, 1000)
            assert uplink.wait_connected(10)
            live = outbox.put("defect", defect("crack", "LIVE-1")).id
            wait_until(lambda: of_type(consumer, "DDATA"), 10, "the live DDATA")

            publish_state(mosquitto, host_id, False, 2000)
            wait_until(lambda: of_type(consumer, "NDEATH"), 10, "NDEATH for the offline host")
            held = [outbox.put("defect", defect("scratch", f"HELD-{n}")).id for n in range(5)]
            held.append(outbox.put("status", {"ready": True}).id)
            time.sleep(1.5)  # the node reconnects meanwhile, but must not send
            assert len(of_type(consumer, "DDATA")) == 1 and len(outbox) == 6

            publish_state(mosquitto, host_id, False, 500)  # older than the last: ignored
            publish_state(mosquitto, host_id, True, 3000)
            wait_until(lambda: len(of_type(consumer, "DDATA")) == 7, 15, "the held data")
            after = outbox.put("defect", defect("crack", "LIVE-2")).id
            wait_until(lambda: len(of_type(consumer, "DDATA")) == 8, 10, "a live DDATA again")
            wait_until(lambda: len(outbox) == 0, 10, "an empty outbox")
    finally:
        publish_state(mosquitto, host_id, False, 9000)
    messages = received(consumer)
    names = [name for name, _ in messages]
    assert names.index("NDEATH") < names.index("NBIRTH", 1)  # death, then a new birth
    ddata = of_type(consumer, "DDATA")
    event_ids = [
        p.values().get("Last Decision/Event Id") or json.loads(p.values()["Events/status"])["id"]
        for p in ddata
    ]
    assert event_ids == [live, *held, after]  # in order, nothing lost
    flags = [{m.is_historical for m in p.metrics} for p in ddata]
    assert flags == [{False}] + [{True}] * 6 + [{False}]
    part_ids = [p.values().get("Last Decision/Part Id") for p in ddata[1:6]]
    assert part_ids == [f"HELD-{n}" for n in range(5)]
    births = of_type(consumer, "NBIRTH")
    assert births[1].metric("bdSeq").value != births[0].metric("bdSeq").value
    outbox.close()


def test_seq_stays_in_sending_order_when_live_defects_come_during_a_backlog(
    make_config: ConfigFactory, mosquitto: MosquittoBroker
) -> None:
    """Live events do not overtake the backlog in the MQTT client's queue under Sparkplug:
    DDATA's seq is given when a message is encoded, so they must go out in that order."""
    config = sparkplug_config(make_config)
    outbox = open_outbox(config)  # type: ignore[arg-type]
    backlog = 10_000
    outbox.put_many(outbox.accept("defect", defect("spot", f"B-{n}")) for n in range(backlog))
    with collecting(mosquitto, "spBv1.0/#") as consumer, node(config, outbox) as uplink:
        wait_until(lambda: len(consumer.messages) >= 200, 30, "the drain to start")
        for n in range(20):  # spread over the drain
            outbox.put("defect", defect("crack", f"L-{n}"))
            time.sleep(0.01)
        assert uplink.wait_drained(120)
        wait_until(lambda: len(consumer.messages) >= backlog + 22, 30, "every DDATA")
    sequence = [payload.seq for name, payload in received(consumer) if name != "NDEATH"]
    assert sequence[:2] == [0, 1]  # NBIRTH, DBIRTH
    steps = {(after - before) % 256 for before, after in itertools.pairwise(sequence)}
    assert steps == {1}, "seq went out of order"
    outbox.close()
