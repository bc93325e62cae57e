"""The outbox on a real diskcache store: FIFO, retention, cap, priorities, bad input."""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

import pytest

from edge.errors import MessageRejectedError, OutboxFullError
from edge.outbox.message import OutboxMessage, new_message_id
from edge.outbox.store import SQLITE_SETTINGS, Outbox
from tests.support.fake_clock import FakeClock
from tests.support.outboxes import make_outbox

HOUR = 3600.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def outbox(tmp_path: Path, clock: FakeClock) -> Outbox:
    box = make_outbox(tmp_path / "outbox", clock)
    yield box
    box.close()


def test_messages_come_out_in_the_order_they_were_put(outbox: Outbox) -> None:
    ids = [outbox.put("defect", {"n": n}).id for n in range(50)]
    assert [m.id for m in outbox.peek(100)] == ids
    assert [m.payload["n"] for m in outbox.read_from(outbox.peek(1)[0].seq + 10, 5)] == [
        10,
        11,
        12,
        13,
        14,
    ]
    assert len(outbox) == 50


def test_messages_survive_closing_and_reopening(tmp_path: Path, clock: FakeClock) -> None:
    first = make_outbox(tmp_path / "o", clock)
    ids = [first.put("voice", {"n": n}).id for n in range(5)]
    first.close()
    again = make_outbox(tmp_path / "o", clock)
    assert [m.id for m in again.peek(10)] == ids
    assert again.put("voice", {}).seq == 6  # the sequence continues
    again.close()


def test_durability_settings_are_full_sync_with_values_inside_sqlite() -> None:
    assert SQLITE_SETTINGS["sqlite_synchronous"] == 2
    assert SQLITE_SETTINGS["sqlite_journal_mode"] == "wal"
    assert SQLITE_SETTINGS["disk_min_file_size"] > 16 * 1024 * 1024


def test_delivered_messages_leave_and_are_counted(outbox: Outbox) -> None:
    messages = [outbox.put("defect", {"n": n}) for n in range(10)]
    assert outbox.remove_delivered(messages[:4]) == 4
    assert outbox.remove_delivered(messages[:4]) == 0  # acknowledged twice: counted once
    stats = outbox.stats()
    assert stats.depth == 6
    assert stats.delivered_total == 4
    assert [m.id for m in outbox.peek(10)] == [m.id for m in messages[4:]]
    assert stats.bytes == sum(len(m.to_bytes()) for m in messages[4:])


def test_messages_older_than_72_hours_expire(outbox: Outbox, clock: FakeClock) -> None:
    old = [outbox.put("telemetry", {"n": n}) for n in range(3)]
    clock.advance(70 * HOUR)
    fresh = outbox.put("defect", {})
    assert outbox.expire() == 0
    clock.advance(2 * HOUR + 1)
    assert outbox.expire() == 3
    assert [m.id for m in outbox.peek(10)] == [fresh.id]
    assert outbox.stats().expired_total == 3
    assert all(outbox.get(m.seq) is None for m in old)


def test_retention_counts_time_from_a_clock_that_cannot_run_backwards(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A Pi without RTC: after a power cut the wall clock restarts in the past."""
    first = make_outbox(tmp_path / "o", clock, retention_hours=72)
    message = first.put("defect", {})
    clock.advance(10 * HOUR)
    first.close()  # checkpoint at 10 h of life
    clock.reboot(boot_id="boot-2", wall_s=clock.wall_s - 30 * 24 * HOUR, trusted=False)
    again = make_outbox(tmp_path / "o", clock, retention_hours=72)
    age = again.age_s(again.get(message.seq))  # type: ignore[arg-type]
    assert 10 * HOUR <= age < 10 * HOUR + 60  # wall clock went back a month; age did not
    clock.advance(62 * HOUR)
    assert again.expire() == 1
    again.close()


def test_powered_off_time_counts_once_the_clock_is_synchronised(
    tmp_path: Path, clock: FakeClock
) -> None:
    first = make_outbox(tmp_path / "o", clock)
    message = first.put("defect", {})
    first.close()
    off_for = 5 * HOUR
    clock.reboot(boot_id="boot-2", wall_s=clock.wall_s + off_for + 5.0, trusted=True)
    again = make_outbox(tmp_path / "o", clock)
    age = again.age_s(again.get(message.seq))  # type: ignore[arg-type]
    assert math.isclose(age, off_for + 5.0, abs_tol=1.0)
    again.close()


def test_unsynchronised_timestamps_are_corrected_after_sync(
    outbox: Outbox, clock: FakeClock
) -> None:
    clock.trusted = False
    clock.wall_s = 1_000_000.0  # the clock restarted far in the past
    message = outbox.put("defect", {})
    assert outbox.created_at(message) == (1_000_000.0, "unsynced")
    clock.advance(120)
    true_now = 1_790_000_500.0
    clock.wall_s = true_now  # NTP stepped the clock
    clock.trusted = True
    created, source = outbox.created_at(message)
    assert source == "corrected"
    assert math.isclose(created, true_now - 120)


def test_cap_drops_lowest_priority_oldest_first(tmp_path: Path, clock: FakeClock) -> None:
    box = make_outbox(tmp_path / "o", clock, max_bytes=1 << 20, max_message_bytes=64 * 1024)
    filler = "x" * 20_000
    defects = [box.put("defect", {"n": n, "f": filler}) for n in range(10)]
    telemetry = [box.put("telemetry", {"n": n, "f": filler}) for n in range(60)]
    stats = box.stats()
    assert stats.bytes < stats.disk_bytes <= box.max_bytes  # the cap counts SQLite's overhead
    assert stats.dropped_total > 0
    remaining = {m.id for m in box.peek(1000)}
    assert {m.id for m in defects} <= remaining  # a telemetry flood never evicts a defect
    kept_telemetry = [m.id for m in telemetry if m.id in remaining]
    assert kept_telemetry == [m.id for m in telemetry[-len(kept_telemetry) :]]  # oldest went
    box.close()


def test_lowest_priority_message_is_dropped_when_only_higher_ones_fill_the_cap(
    tmp_path: Path, clock: FakeClock
) -> None:
    box = make_outbox(tmp_path / "o", clock, max_bytes=1 << 20, max_message_bytes=256 * 1024)
    filler = "x" * 30_000
    while box.stats().dropped_total == 0:  # until a defect had to evict an older defect
        box.put("defect", {"f": filler})
    depth, dropped = len(box), box.stats().dropped_total
    with pytest.raises(OutboxFullError, match="telemetry message, which was dropped"):
        box.put("telemetry", {"f": "x" * 200_000})  # more than eviction leaves free
    assert len(box) == depth
    assert box.stats().dropped_total == dropped + 1
    box.close()


@pytest.mark.parametrize(
    ("kind", "payload", "match"),
    [
        ("defect", {"image": object()}, "not JSON-serialisable"),
        ("defect", {"score": float("nan")}, "not JSON-serialisable"),
        ("defect", ["not", "an", "object"], "must be a JSON object"),
        ("de/fect", {}, "invalid event kind"),
        ("defect/#", {}, "invalid event kind"),
        ("Defect Event", {}, "invalid event kind"),
        ("defect", {"blob": "x" * 300_000}, "over cache.max_message_bytes"),
    ],
)
def test_bad_input_is_refused_at_put_and_nothing_else_changes(
    outbox: Outbox, kind: str, payload: object, match: str
) -> None:
    kept = outbox.put("defect", {"ok": True})
    with pytest.raises(MessageRejectedError, match=match):
        outbox.put(kind, payload)
    assert [m.id for m in outbox.peek(10)] == [kept.id]
    assert outbox.put("defect", {}).seq == kept.seq + 1  # a refused put used no sequence


def test_purge_removes_only_old_messages(outbox: Outbox, clock: FakeClock) -> None:
    outbox.put("telemetry", {})
    clock.advance(5 * HOUR)
    young = outbox.put("telemetry", {})
    assert outbox.purge_older_than(4) == 1
    assert [m.id for m in outbox.peek(5)] == [young.id]
    assert outbox.stats().dropped_total == 1


def test_stats_report_depth_bytes_age_and_drain_estimate(outbox: Outbox, clock: FakeClock) -> None:
    assert outbox.stats().oldest_age_s is None
    for _ in range(4):
        outbox.put("voice", {"text": "start"})
    clock.advance(30)
    stats = outbox.stats()
    assert stats.depth == 4
    assert stats.depth_by_priority == {20: 4}
    assert math.isclose(stats.oldest_age_s or 0, 30)
    assert stats.estimated_drain_s(2.0) == 2.0


def test_listeners_hear_each_durable_message(outbox: Outbox) -> None:
    heard = []
    outbox.add_listener(heard.append)
    message = outbox.put("defect", {})
    assert heard == [message]


def test_a_burst_is_stored_in_order_in_one_transaction_and_heard_once_each(
    outbox: Outbox,
) -> None:
    heard = []
    outbox.add_listener(heard.append)
    first = outbox.put("defect", {"n": -1})
    events = [outbox.accept("telemetry", {"n": n}) for n in range(300)]
    stored = outbox.put_many(events)
    assert [m.seq for m in stored if m] == list(range(first.seq + 1, first.seq + 301))
    assert [m.payload["n"] for m in outbox.peek(1000)] == list(range(-1, 300))
    assert heard == [first, *stored]
    stats = outbox.stats()
    assert stats.depth == 301
    assert stats.depth_by_priority == {30: 1, 0: 300}
    assert stats.bytes == sum(len(m.to_bytes()) for m in outbox.peek(1000))


def test_a_bad_event_is_refused_before_a_burst_touches_the_store(outbox: Outbox) -> None:
    kept = outbox.put("defect", {})
    with pytest.raises(MessageRejectedError, match=r"over cache\.max_message_bytes"):
        outbox.accept("defect", {"blob": "x" * 300_000})
    with pytest.raises(MessageRejectedError, match="invalid event kind"):
        outbox.accept("De Fect", {})
    assert outbox.put_many([]) == []
    assert outbox.put("defect", {}).seq == kept.seq + 1


def test_bursts_at_the_cap_drop_lowest_priority_oldest_first(
    tmp_path: Path, clock: FakeClock
) -> None:
    box = make_outbox(tmp_path / "o", clock, max_bytes=1 << 20, max_message_bytes=64 * 1024)
    filler = "x" * 20_000

    def burst(kind: str, first: int) -> list[OutboxMessage | None]:
        return box.put_many(
            [box.accept(kind, {"n": n, "f": filler}) for n in range(first, first + 10)]
        )

    defects = burst("defect", 0) + burst("defect", 10)
    telemetry = [m for first in range(0, 60, 10) for m in burst("telemetry", first)]
    stats = box.stats()
    assert stats.dropped_total > 0
    assert stats.disk_bytes <= box.max_bytes + (256 << 10)  # + one burst's write-ahead log
    remaining = {m.id for m in box.peek(1000)}
    assert {m.id for m in defects if m} == remaining - {m.id for m in telemetry if m}
    assert all(defects)  # a telemetry flood never evicts a defect
    kept = [m.id for m in telemetry if m and m.id in remaining]
    assert kept == [m.id for m in telemetry if m][-len(kept) :]  # the oldest went
    box.close()


def test_deleting_a_batch_adjusts_every_priority_once(outbox: Outbox) -> None:
    messages = [outbox.put(kind, {"n": n}) for n in range(5) for kind in ("defect", "voice")]
    assert outbox.remove_delivered(messages[:7] + messages[:2]) == 7
    stats = outbox.stats()
    assert stats.depth_by_priority == {30: 1, 20: 2}
    assert stats.delivered_total == 7
    assert stats.bytes == sum(len(m.to_bytes()) for m in messages[7:])


def test_rows_in_the_earlier_one_object_layout_are_still_read(outbox: Outbox) -> None:
    """Outboxes written before the header + payload layout drain after an update."""
    new = outbox.put("defect", {"n": 1, "text": "naïve"})
    fields = new.header() | {"payload": {"n": 0, "text": "naïve"}, "seq": new.seq + 1}
    earlier = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
    outbox._cache.set(f"m:{new.seq + 1:020d}", earlier)  # as ``Cache.set`` stored it then
    old = outbox.get(new.seq + 1)
    assert old is not None and old.payload == {"n": 0, "text": "naïve"}
    assert [m.payload["n"] for m in outbox.peek(5)] == [1, 0]
    assert OutboxMessage.from_bytes(new.to_bytes()) == new


def test_the_payload_is_stored_as_the_json_text_that_goes_on_the_wire(outbox: Outbox) -> None:
    payload = {"class": "scratch", "score": 0.97, "where": [1, 2], "note": 'é\n"q"'}
    message = outbox.put("defect", payload)
    stored = outbox.get(message.seq)
    assert stored is not None and stored.payload == payload
    envelope = stored.envelope(device="d-1", site='s"1', created_at=1.5e9, time_source="wall")
    assert (
        envelope
        == json.dumps(
            {
                "id": message.id,
                "kind": "defect",
                "device": "d-1",
                "site": 's"1',
                "created_at": "2017-07-14T02:40:00.000+00:00",
                "time_source": "wall",
                "data": payload,
            },
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()
    )


def test_payloads_json_cannot_carry_are_refused_before_storing(outbox: Outbox) -> None:
    with pytest.raises(MessageRejectedError, match="not JSON-serialisable"):
        outbox.put("defect", {"score": math.nan})
    with pytest.raises(MessageRejectedError, match="not JSON-serialisable"):
        outbox.put("defect", {"text": "\ud800"})  # a lone surrogate has no UTF-8 form
    assert len(outbox) == 0


def test_removing_delivered_messages_leaves_puts_fully_synced(outbox: Outbox) -> None:
    """Deletes skip the fsync (a lost delete only resends); acceptance never does."""
    messages = [outbox.put("defect", {"n": n}) for n in range(3)]
    assert outbox.remove_delivered(messages[:2]) == 2
    assert outbox.remove_expired([messages[2]]) == 1
    ((level,),) = outbox._cache._sql("PRAGMA synchronous").fetchall()
    assert level == SQLITE_SETTINGS["sqlite_synchronous"] == 2


def test_message_ids_are_random_version_4_uuids() -> None:
    ids = {new_message_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(uuid.UUID(text).version == 4 and str(uuid.UUID(text)) == text for text in ids)


@pytest.mark.parametrize(
    ("created_wall", "created_elapsed", "topic"),
    [
        (1_733_390_000.123456, 12.5, "moltbot/site/dev/defect"),
        (0, 0, 'moltbot/sité/\u00e9"q"/defect'),
        (1e-7, 1e21, "t"),
        (float("nan"), float("inf"), "t"),
    ],
)
def test_the_stored_header_is_the_compact_json_of_the_message_fields(
    created_wall: float, created_elapsed: float, topic: str
) -> None:
    message = OutboxMessage(
        id=new_message_id(),
        seq=12,
        kind="defect",
        topic=topic,
        qos=1,
        priority=-(10**6),
        created_wall=created_wall,
        created_trusted=False,
        created_boot_id="b\u00f6ot",
        created_boottime=3.25,
        created_elapsed=created_elapsed,
        payload={"a": 1},
    )
    header, _, payload = message.to_bytes().partition(b"\n")
    assert (
        header == json.dumps(message.header(), separators=(",", ":"), ensure_ascii=False).encode()
    )
    assert payload == b'{"a":1}'


def test_a_burst_that_evicts_its_own_earlier_events_reports_them_dropped(
    tmp_path: Path, clock: FakeClock
) -> None:
    """Near the cap, a burst's later defects evict its own earlier telemetry: those are None
    in the answer and never heard by listeners (the uplink's live lane would send them)."""
    box = make_outbox(tmp_path / "o", clock, max_bytes=1 << 20, max_message_bytes=64 * 1024)
    heard: list[str] = []
    box.add_listener(lambda message: heard.append(message.id))
    filler = "x" * 20_000
    events = [box.accept("telemetry", {"n": n, "f": filler}) for n in range(40)]
    events += [box.accept("defect", {"n": n, "f": filler}) for n in range(10)]
    answer = box.put_many(events)
    stored = {m.id for m in box.peek(1000)}
    reported = [m for m in answer if m is not None]
    assert box.stats().dropped_total > 0
    assert all(m is not None for m in answer[40:])  # every defect kept
    assert answer[:40].count(None) > 0
    assert {m.id for m in reported} == stored
    assert set(heard) == stored
    box.close()


@pytest.mark.parametrize("qos", [0, 1])
def test_the_row_a_put_stores_is_the_returned_message_to_bytes(
    outbox: Outbox, clock: FakeClock, qos: int
) -> None:
    """A put writes its row from parts rendered once (event fields at accept, clock fields once
    per transaction): the row must be exactly the message's own stored form."""
    burst = [outbox.accept(kind, {"n": n, "é": "\n"}, qos=qos) for n, kind in enumerate("ab")]
    clock.advance(1.0 / 3)
    stored = [outbox.put("defect", {"x": 0.1}, qos=qos), *outbox.put_many(burst)]
    for message in stored:
        assert message is not None
        (raw,) = outbox._cache._con.execute(
            "SELECT value FROM Cache WHERE key = ?", (f"m:{message.seq:020d}",)
        ).fetchone()
        assert bytes(raw) == message.to_bytes()
        header, _, payload = bytes(raw).partition(b"\n")
        compact = json.dumps(message.header(), separators=(",", ":"), ensure_ascii=False)
        assert header == compact.encode()  # the encoder's bytes, not only to_bytes' own
        assert payload == message.payload_json
        assert OutboxMessage.from_bytes(bytes(raw)) == message


def test_every_kind_keeps_its_topic_and_priority_past_the_remembered_routes(
    outbox: Outbox,
) -> None:
    """accept remembers the first few hundred (kind, qos) routes; kinds beyond them are
    checked and routed as the first ones were."""
    kinds = [f"k{n}" for n in range(300)] + ["defect", "telemetry"]
    for kind in kinds:
        message = outbox.put(kind, {})
        assert (message.topic, message.priority) == (
            f"moltbot/site/dev/{kind}",
            {"defect": 30, "telemetry": 0}.get(kind, -(10**6)),
        )
    with pytest.raises(MessageRejectedError, match="invalid event kind"):
        outbox.put("Bad/kind", {})
    with pytest.raises(MessageRejectedError, match="qos must be 0 or 1"):
        outbox.put("defect", {}, qos=2)


def test_one_kind_with_each_qos_is_stored_with_its_own_qos(outbox: Outbox) -> None:
    """accept remembers routes by (kind, qos): the same kind at QoS 0 and then 1 (and 0 again)
    must not share one."""
    stored = [outbox.put("status", {"n": n}, qos=qos) for n, qos in enumerate([0, 1, 0])]
    for message, qos in zip(stored, [0, 1, 0], strict=True):
        assert message.qos == qos
        again = outbox.get(message.seq)
        assert again is not None and again.qos == qos
        header = json.loads(message.to_bytes().partition(b"\n")[0])
        assert header["qos"] == qos


@pytest.mark.parametrize(
    ("kind", "payload", "qos", "match"),
    [
        ("Bad/kind", {"x": float("nan")}, 2, "invalid event kind"),
        ("defect", {"x": float("nan")}, 2, "JSON-serialisable"),
        ("defect", ["not", "an", "object"], 1, "must be a JSON object"),
        ("defect", {}, 2, "qos must be 0 or 1"),
    ],
)
def test_what_is_wrong_is_said_in_order_kind_payload_qos(
    outbox: Outbox, kind: str, payload: object, qos: int, match: str
) -> None:
    for _ in range(2):  # the second time the (kind, qos) pair may be remembered
        outbox.put("defect", {}, qos=1)
        with pytest.raises(MessageRejectedError, match=match):
            outbox.accept(kind, payload, qos=qos)
