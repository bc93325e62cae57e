"""The uplink against a real Mosquitto broker, consumed by a real paho subscriber."""

from __future__ import annotations

import json
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge import wiring
from edge.uplink.sync import LinkState, Uplink
from tests.conftest import ConfigFactory
from tests.integration.uplink_rig import (
    FAST_RECONNECT,
    collecting,
    first_occurrences,
    open_outbox,
    running_uplink,
    wait_until,
)
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration


def test_backlog_queued_while_broker_down_is_delivered_in_order_when_it_returns(
    make_config: ConfigFactory, mosquitto: MosquittoBroker
) -> None:
    config = make_config(uplink=FAST_RECONNECT)
    outbox = open_outbox(config)
    mosquitto.stop()
    put_ids = [outbox.put("defect", {"n": n}).id for n in range(1000)]
    with running_uplink(config, outbox) as uplink:
        wait_until(lambda: uplink.counters.failed_connects_total >= 1, 10, "a failed connect")
        mosquitto.start()  # the uplink's next try is ≥ 1 s away: the consumer subscribes first
        with collecting(mosquitto) as consumer:
            assert consumer.wait_for_ids(set(put_ids), 60)
            assert uplink.wait_drained(10)
            received = consumer.event_ids()
    assert received == put_ids  # all, in order, exactly once on a clean run
    assert outbox.stats().delivered_total == 1000
    outbox.close()


def test_broker_restarted_mid_drain_loses_nothing(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    """A broker that keeps its sessions (persistence) is stopped and started mid-drain."""
    broker = MosquittoBroker(workdir=tmp_path / "durable-broker", persistence=True)
    broker.start()
    try:
        config = make_config(uplink=FAST_RECONNECT | {"port": broker.port, "inflight_window": 32})
        outbox = open_outbox(config)
        put_ids = [outbox.put("telemetry", {"n": n, "pad": "x" * 200}).id for n in range(5000)]
        consumer_id = "plant-historian"
        uplink = Uplink(outbox, config.uplink, wiring.topic_scheme(config))
        try:
            with collecting(broker, client_id=consumer_id, persistent=True) as before:
                uplink.start()  # only once the consumer's subscription exists
                wait_until(lambda: len(before.events()) >= 500, 30, "500 messages first")
                broker.stop()
            seen_before = before.event_ids()  # after close: every callback has run
            failures = uplink.counters.failed_connects_total
            wait_until(lambda: uplink.counters.failed_connects_total > failures, 10, "a retry")
            broker.start()
            with collecting(broker, client_id=consumer_id, persistent=True) as after:
                remaining = set(put_ids) - set(seen_before)
                delivered = after.wait_for_ids(remaining, 60)
                missing = remaining - set(after.event_ids())
                assert delivered, (
                    f"{len(missing)} lost across the restart, e.g. positions "
                    f"{sorted(put_ids.index(m) for m in missing)[:10]}; before {len(seen_before)}"
                    f"; outbox {len(outbox)}; {uplink.counters}"
                )
                assert uplink.wait_drained(10)
                seen_after = after.event_ids()
        finally:
            uplink.stop()
        assert len(seen_before) < len(put_ids)  # the restart really happened mid-drain
        assert set(seen_after) & set(seen_before) <= set(seen_before)
        assert first_occurrences(seen_before + seen_after) == put_ids
        assert len(outbox) == 0
        outbox.close()
    finally:
        broker.stop()


@pytest.mark.parametrize("link_process", [True, False], ids=["link-process", "in-process"])
def test_broker_killed_mid_drain_keeps_everything_it_did_not_acknowledge(
    make_config: ConfigFactory, mosquitto: MosquittoBroker, link_process: bool
) -> None:
    """SIGKILL: the broker loses what it acknowledged but had not forwarded (it is not
    persistent); the outbox must resend every message without a PUBACK, and delete none.
    The same with the MQTT client in the link process and in the appliance's process."""
    config = make_config(
        uplink=FAST_RECONNECT | {"inflight_window": 32, "link_process": link_process}
    )
    outbox = open_outbox(config)
    acknowledged: list[str] = []
    delete = outbox.remove_delivered

    def recording_delete(messages):  # type: ignore[no-untyped-def]
        messages = list(messages)
        acknowledged.extend(m.id for m in messages)
        return delete(messages)

    outbox.remove_delivered = recording_delete  # type: ignore[method-assign]
    put_ids = [outbox.put("telemetry", {"n": n, "pad": "x" * 200}).id for n in range(5000)]
    with running_uplink(config, outbox) as uplink:
        with collecting(mosquitto) as before:
            wait_until(lambda: len(before.events()) >= 500, 30, "500 messages before the kill")
            mosquitto.kill()
        seen_before = before.event_ids()  # after close: every callback has run
        failures = uplink.counters.failed_connects_total
        wait_until(lambda: uplink.counters.failed_connects_total > failures, 10, "a retry")
        acknowledged_before_kill = set(acknowledged)
        mosquitto.start()
        with collecting(mosquitto) as after:
            owed = set(put_ids) - set(seen_before) - acknowledged_before_kill
            assert after.wait_for_ids(owed, 60), "unacknowledged messages were not resent"
            assert uplink.wait_drained(10)
            seen_after = after.event_ids()
    assert len(acknowledged_before_kill) < len(put_ids)  # killed mid-drain
    assert set(put_ids) == set(seen_before) | set(seen_after) | acknowledged_before_kill
    assert set(seen_after) - set(put_ids) == set()
    assert len(outbox) == 0
    outbox.close()


def test_mqtt5_messages_carry_id_and_remaining_retention(
    make_config: ConfigFactory, mosquitto: MosquittoBroker
) -> None:
    config = make_config()
    outbox = open_outbox(config)
    with collecting(mosquitto) as consumer, running_uplink(config, outbox):
        message = outbox.put("defect", {"class": "scratch", "score": 0.93})
        assert consumer.wait_for_ids({message.id}, 10)
    received = consumer.events()[0]
    envelope = received.json()
    assert received.topic == "moltbot/test-site/test-device/defect"
    assert envelope["id"] == message.id
    assert envelope["data"] == {"class": "scratch", "score": 0.93}
    assert envelope["device"] == "test-device"
    assert envelope["time_source"] == "wall"
    assert received.user_properties["message-id"] == message.id
    assert received.expiry_interval is not None
    assert 72 * 3600 - 60 <= received.expiry_interval <= 72 * 3600
    outbox.close()


def test_mqtt_311_delivers_the_same_envelope(
    make_config: ConfigFactory, mosquitto: MosquittoBroker
) -> None:
    config = make_config(uplink={"protocol": "3.1.1"})
    outbox = open_outbox(config)
    with collecting(mosquitto) as consumer, running_uplink(config, outbox):
        message = outbox.put("voice", {"text": "start inspection"})
        assert consumer.wait_for_ids({message.id}, 10)
    assert consumer.events()[0].json()["id"] == message.id
    outbox.close()


def test_availability_is_online_while_connected_and_offline_after_stop(
    make_config: ConfigFactory, mosquitto: MosquittoBroker
) -> None:
    config = make_config()
    outbox = open_outbox(config)
    status = "moltbot/test-site/test-device/status"
    with collecting(mosquitto, status) as watcher:
        with running_uplink(config, outbox) as uplink:
            assert uplink.wait_connected(10)
            assert watcher.wait_for(lambda ms: ms and ms[-1].payload == b"online", 10)
        assert watcher.wait_for(lambda ms: ms[-1].payload == b"offline", 10)
    with collecting(mosquitto, status) as late:  # a late subscriber gets the retained state
        assert late.wait_for(lambda ms: ms and ms[0].retain and ms[0].payload == b"offline", 10)
    outbox.close()


@pytest.mark.parametrize("link_process", [True, False], ids=["link-process", "in-process"])
def test_live_defect_overtakes_a_large_backlog(
    make_config: ConfigFactory, mosquitto: MosquittoBroker, link_process: bool
) -> None:
    config = make_config(uplink={"link_process": link_process})
    outbox = open_outbox(config)
    for n in range(20_000):
        outbox.put("telemetry", {"n": n})
    # The plant's defect consumer subscribes to defects only. A subscriber to everything reads
    # the backlog from its own socket in order and in this process, so it can lag thousands of
    # messages behind the broker: its arrival time measures itself, not the uplink.
    defect_topic = "moltbot/test-site/test-device/defect"
    with (
        collecting(mosquitto) as consumer,
        collecting(mosquitto, defect_topic) as defect_consumer,
        running_uplink(config, outbox) as uplink,
    ):
        wait_until(lambda: len(consumer.event_ids()) >= 200, 30, "the drain to start")
        sent_at = time.monotonic()
        live = outbox.put("defect", {"class": "crack"})
        assert defect_consumer.wait_for_ids({live.id}, 5)
        assert uplink.wait_drained(120)
        assert consumer.wait_for(lambda ms: len(ms) >= 20_001, 10)
        received = consumer.event_ids()
        arrived = defect_consumer.events()
    assert [m.json()["id"] for m in arrived] == [live.id]
    assert arrived[0].at - sent_at < 1.0
    backlog_after_it = len(received) - received.index(live.id) - 1
    assert backlog_after_it > 1000  # it did not wait for the backlog
    outbox.close()


def test_commands_are_answered_and_unknown_ones_become_error_events(
    make_config: ConfigFactory, mosquitto: MosquittoBroker
) -> None:
    config = make_config()
    outbox = open_outbox(config)
    base = "moltbot/test-site/test-device"
    with collecting(mosquitto) as consumer, running_uplink(config, outbox) as uplink:
        assert uplink.wait_connected(10)
        time.sleep(0.2)  # the uplink subscribes right after CONNACK
        sender = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2)
        sender.connect(mosquitto.host, mosquitto.port)
        sender.loop_start()
        for topic, payload in [
            (f"{base}/cmd/ping", b"{}"),
            (f"{base}/cmd/self-destruct", b"{}"),
            (f"{base}/cmd/ping", b"{not json"),
        ]:
            sender.publish(topic, payload, qos=1).wait_for_publish(5)
        sender.disconnect()
        sender.loop_stop()
        assert consumer.wait_for(lambda _messages: len(consumer.events()) >= 3, 10)
        assert uplink.state == LinkState.CONNECTED
    by_kind: dict[str, list[dict]] = {}
    for message in consumer.events():
        envelope = message.json()
        by_kind.setdefault(envelope["kind"], []).append(envelope["data"])
    assert by_kind.get("status"), by_kind
    assert by_kind["status"][0]["reply"]["pong"] is True
    errors = {e["command"]: e["error"] for e in by_kind["error"]}
    assert "unknown command 'self-destruct'" in errors["self-destruct"]
    assert "not JSON" in errors["ping"]
    outbox.close()


def test_messages_past_retention_are_expired_instead_of_sent(
    make_config: ConfigFactory, mosquitto: MosquittoBroker
) -> None:
    config = make_config(cache={"retention_hours": 0.0003})  # about one second
    outbox = open_outbox(config)
    stale = outbox.put("telemetry", {})
    time.sleep(1.5)
    with collecting(mosquitto) as consumer, running_uplink(config, outbox) as uplink:
        fresh = outbox.put("defect", {})
        assert consumer.wait_for_ids({fresh.id}, 10)
        assert uplink.wait_drained(5)
    assert stale.id not in consumer.event_ids()
    assert outbox.stats().expired_total == 1
    outbox.close()


def test_wrong_password_is_reported_once_and_data_stays_queued(
    make_config: ConfigFactory, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    import subprocess

    password_file = tmp_path / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(password_file), "line7", "right"],
        check=True,
        capture_output=True,
    )
    broker = MosquittoBroker(
        workdir=tmp_path / "auth-broker",
        extra_config=f"password_file {password_file}\n",
    )
    broker.start()
    try:
        broker_config = broker.config_text().replace(
            "allow_anonymous true", "allow_anonymous false"
        )
        broker.stop()
        broker.config_text = lambda: broker_config  # type: ignore[method-assign]
        broker.start()
        settings = {
            "host": broker.host,
            "port": broker.port,
            "username": "line7",
            "password": "wrong",
            "reconnect_min_s": 0.1,
            "reconnect_max_s": 0.2,
        }
        config = make_config(uplink=settings)
        outbox = open_outbox(config)
        message = outbox.put("defect", {})
        with running_uplink(config, outbox) as uplink:
            wait_until(lambda: uplink.counters.failed_connects_total >= 3, 20, "3 refusals")
            assert uplink.state == LinkState.REFUSED
            assert uplink.last_error is not None
            assert "refused the connection" in uplink.last_error
            assert "Not authorized (reason code 135)" in uplink.last_error  # as Mosquitto says it
        refusals = [r for r in caplog.records if "refused the connection" in r.getMessage()]
        assert len(refusals) == 1
        assert [m.id for m in outbox.peek(5)] == [message.id]
        good = make_config(uplink=settings | {"password": "right"})
        with running_uplink(good, outbox) as uplink:
            assert uplink.wait_drained(10)
        outbox.close()
    finally:
        broker.stop()


def test_envelope_is_valid_json_with_iso_timestamp(
    make_config: ConfigFactory, mosquitto: MosquittoBroker
) -> None:
    config = make_config()
    outbox = open_outbox(config)
    with collecting(mosquitto) as consumer, running_uplink(config, outbox):
        message = outbox.put("status", {"ok": True})
        assert consumer.wait_for_ids({message.id}, 10)
    received = consumer.events()[0]
    assert received.topic == "moltbot/test-site/test-device/status/report"
    envelope = json.loads(received.payload)
    assert envelope["created_at"].endswith("+00:00")
    outbox.close()
