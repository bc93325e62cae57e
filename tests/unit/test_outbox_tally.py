"""The outbox's counters kept off the put's commit (``edge/outbox/tally.py``): exact depth and
bytes through any mix of puts, bursts and deletes; sequence numbers never given out twice; an
outbox of the earlier layout taken over, and a runtime of that layout writing in between (an
A/B rollback and back)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from edge.outbox import rows, tally
from edge.outbox.message import OutboxMessage
from edge.outbox.store import Outbox
from tests.support.outboxes import PRIORITIES, counted_from_rows, make_outbox


def counter_rows(outbox: Outbox) -> dict[str, int]:
    found = rows.query(
        outbox._cache,
        "SELECT key, value FROM Cache"
        " WHERE key > 's:' AND key < 's;' AND typeof(value) = 'integer'",
    )
    return {str(key): int(value) for key, value in found}


def old_runtime_put(outbox: Outbox, kind: str, payload: dict[str, int]) -> OutboxMessage:
    """A put as the runtime before this layout made it: the next number after ``s:seq``, no
    priority tag, and ``s:seq``, the count and ``s:bytes`` moved in the same transaction."""
    cache = outbox._cache
    with cache.transact():
        seq = rows.counters_named(cache, (tally.SEQ_KEY,)).get(tally.SEQ_KEY, 0) + 1
        message = OutboxMessage(
            id=f"old-{seq}",
            seq=seq,
            kind=kind,
            topic=f"moltbot/site/dev/{kind}",
            qos=1,
            priority=PRIORITIES[kind],
            created_wall=time.time(),
            created_trusted=True,
            created_boot_id="boot-1",
            created_boottime=1.0,
            created_elapsed=0.0,
            payload=payload,
        )
        raw = message.to_bytes()
        rows.query(
            cache,
            "INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count,"
            " tag, size, mode, filename, value) VALUES (?, 1, 0, NULL, 0, 0, NULL, 0, 1, NULL, ?)",
            (tally.message_key(seq), raw),
        )
        rows.add_to_counters(
            cache,
            {
                tally.SEQ_KEY: 1,
                tally.count_key(message.priority): 1,
                tally.BYTES_KEY: len(raw),
            },
        )
    return message


def test_counts_and_bytes_stay_exact_through_any_mix_of_puts_bursts_and_deletes(
    tmp_path: Path,
) -> None:
    outbox = make_outbox(tmp_path / "o")
    rng = random.Random(7)
    stored: list[OutboxMessage] = []
    for step in range(400):
        action = rng.random()
        if action < 0.55:
            stored.append(outbox.put(rng.choice(list(PRIORITIES)), {"n": step, "pad": "x" * step}))
        elif action < 0.7:
            events = [
                outbox.accept(rng.choice(list(PRIORITIES)), {"burst": n})
                for n in range(rng.randint(1, 90))
            ]
            stored.extend(m for m in outbox.put_many(events) if m is not None)
        elif stored:
            chosen = rng.sample(stored, rng.randint(1, len(stored)))
            outbox.remove_delivered(chosen)
            stored = [m for m in stored if m not in chosen]
        if step % 25 == 0:
            stats = outbox.stats()
            truth = counted_from_rows(outbox)
            assert (stats.depth, stats.bytes) == (truth.depth, truth.bytes)
            assert stats.depth_by_priority == {p: n for p, n in truth.counts.items() if n}
    assert len(outbox) == len(stored)
    outbox.close()


def test_a_put_writes_its_message_row_and_no_counter_row(tmp_path: Path) -> None:
    outbox = make_outbox(tmp_path / "o")
    outbox.put("defect", {"first": True})  # the first put raises the sequence ceiling
    before = counter_rows(outbox)
    for n in range(tally.FOLD_EVERY - 2):
        outbox.put("telemetry", {"n": n})
    assert counter_rows(outbox) == before
    assert len(outbox) == tally.FOLD_EVERY - 1  # counted from the tail
    outbox.close()


def test_sequence_numbers_are_never_given_out_twice(tmp_path: Path) -> None:
    outbox = make_outbox(tmp_path / "o")
    first = [outbox.put("defect", {"n": n}) for n in range(5)]
    outbox.remove_delivered(first)  # the highest stored number leaves too
    assert outbox.last_seq() == 5
    assert outbox.put("defect", {}).seq == 6
    outbox.close()
    again = make_outbox(tmp_path / "o")
    again.remove_delivered(again.peek(10))
    assert again.put("voice", {}).seq == 7
    again.close()


def test_the_ceiling_stays_above_every_number_given_out(tmp_path: Path) -> None:
    """What a runtime from before this layout reads as the last number given out."""
    outbox = make_outbox(tmp_path / "o")
    for burst in range(3):
        events = [outbox.accept("telemetry", {"n": n}) for n in range(tally.SEQ_RESERVE // 2 + 7)]
        outbox.put_many(events)
        assert counter_rows(outbox)[tally.SEQ_KEY] >= outbox.last_seq(), burst
    outbox.close()


def test_an_outbox_of_the_earlier_layout_is_taken_over_without_recounting(
    tmp_path: Path,
) -> None:
    outbox = make_outbox(tmp_path / "o")
    cache = outbox._cache
    with cache.transact():  # back to the earlier layout: no watermark, no mirror
        rows.query(cache, "DELETE FROM Cache WHERE key IN ('s:watermark', 's:bytes-mirror')")
    old = [old_runtime_put(outbox, "defect", {"n": n}) for n in range(3)]
    old += [old_runtime_put(outbox, "telemetry", {"n": n}) for n in range(2)]
    outbox.close()

    taken_over = make_outbox(tmp_path / "o")
    assert counter_rows(taken_over)[tally.WATERMARK_KEY] == 5
    assert taken_over.stats().depth_by_priority == {30: 3, 0: 2}
    new = taken_over.put("voice", {"after": "update"})
    assert new.seq == 6
    taken_over.remove_delivered(old[:2])
    stats = taken_over.stats()
    assert (stats.depth, stats.bytes) == (4, counted_from_rows(taken_over).bytes)
    assert [m.seq for m in taken_over.peek(10)] == [3, 4, 5, 6]
    taken_over.close()


@pytest.mark.parametrize("old_runtime_also_deletes", [False, True])
def test_a_runtime_of_the_earlier_layout_writing_in_between_is_recounted(
    tmp_path: Path, old_runtime_also_deletes: bool
) -> None:
    """Update, roll back to the earlier runtime (it puts and drains), update again."""
    outbox = make_outbox(tmp_path / "o")
    ours = [outbox.put("telemetry", {"n": n}) for n in range(10)]  # all in the tail
    rolled_back = [old_runtime_put(outbox, "defect", {"n": n}) for n in range(3)]
    assert min(m.seq for m in rolled_back) > max(m.seq for m in ours)
    if old_runtime_also_deletes:  # the earlier runtime subtracts rows it never counted
        with outbox._cache.transact():
            deleted = rows.delete_keys(outbox._cache, [tally.message_key(ours[0].seq)])
            rows.add_to_counters(
                outbox._cache,
                {tally.count_key(0): -1, tally.BYTES_KEY: -deleted[tally.message_key(1)]},
            )
    expected = counted_from_rows(outbox)
    stats = outbox.stats()
    assert (stats.depth, stats.bytes) == (expected.depth, expected.bytes)
    assert stats.depth_by_priority == {30: 3, 0: 9 if old_runtime_also_deletes else 10}

    outbox.remove_delivered(ours[5:7])  # the fold sees the foreign counters and recounts
    after = outbox.stats()
    truth = counted_from_rows(outbox)
    assert (after.depth, after.bytes) == (truth.depth, truth.bytes)
    counters = counter_rows(outbox)
    assert counters[tally.BYTES_KEY] == counters[tally.MIRROR_KEY] == truth.bytes
    assert outbox.put("voice", {}).seq > max(m.seq for m in rolled_back)
    outbox.close()


def test_the_statements_spell_the_key_layout_of_the_module() -> None:
    assert f"key = '{tally.WATERMARK_KEY}'" in tally._HEAD_SQL
    assert f"key = '{tally.SEQ_KEY}'" in tally._HEAD_SQL
    assert f"key = '{tally.BYTES_KEY}'" in tally._TALLY_SQL
    assert f"key = '{tally.MIRROR_KEY}'" in tally._TALLY_SQL
    assert (
        f"key > '{tally.COUNT_PREFIX}' AND key < '{tally.COUNT_PREFIX[:-1]};'" in tally._TALLY_SQL
    )
    span = f"key > '{tally.MESSAGE_PREFIX}' AND key < '{tally.MESSAGES_END}'"
    assert span in tally._HEAD_SQL and span in tally._ROWS_SQL
    assert f"printf('{tally.MESSAGE_PREFIX}%020d'" in tally._TAIL
    assert tally.message_key(7) == f"{tally.MESSAGE_PREFIX}{7:020d}"


def old_runtime_deliver(outbox: Outbox, messages: list[OutboxMessage]) -> None:
    """Deletes as the runtime before this layout made them: every count and s:bytes moved."""
    cache = outbox._cache
    with cache.transact():
        deleted = rows.delete_keys(cache, [tally.message_key(m.seq) for m in messages])
        deltas: dict[str, int] = {tally.BYTES_KEY: -sum(deleted.values())}
        for message in messages:
            if tally.message_key(message.seq) in deleted:
                key = tally.count_key(message.priority)
                deltas[key] = deltas.get(key, 0) - 1
        rows.add_to_counters(cache, deltas)


def test_numbers_an_earlier_runtime_gave_out_and_delivered_are_not_given_again(
    tmp_path: Path,
) -> None:
    """Roll back, the earlier runtime puts and delivers everything it put, roll forward: no
    row and no byte count shows it ran, only ``s:seq`` does."""
    outbox = make_outbox(tmp_path / "o")
    outbox.remove_delivered([outbox.put("telemetry", {"n": n}) for n in range(10)])
    outbox.close()
    rolled_back = make_outbox(tmp_path / "o")
    theirs = [old_runtime_put(rolled_back, "defect", {"n": n}) for n in range(3)]
    old_runtime_deliver(rolled_back, theirs)
    rolled_back._cache.close()
    again = make_outbox(tmp_path / "o")
    assert again.last_seq() >= max(m.seq for m in theirs)
    burst = again.put_many([again.accept("voice", {"n": n}) for n in range(tally.SEQ_RESERVE)])
    seqs = [m.seq for m in burst if m is not None]
    assert min(seqs) > max(m.seq for m in theirs)
    assert again.stats().depth == tally.SEQ_RESERVE == counted_from_rows(again).depth
    again.close()


def test_an_eviction_right_after_an_earlier_runtime_wrote_keeps_the_counters_exact(
    tmp_path: Path,
) -> None:
    outbox = make_outbox(tmp_path / "o", max_bytes=1 << 20, max_message_bytes=256 * 1024)
    for n in range(220):
        outbox.put("telemetry", {"n": n, "f": "x" * 3000})
    old_runtime_put(outbox, "telemetry", {"old": 1})
    big = outbox.put("defect", {"f": "y" * 200_000})  # evicts telemetry to fit
    stats, truth = outbox.stats(), counted_from_rows(outbox)
    assert stats.dropped_total > 0 and outbox.get(big.seq) is not None
    assert stats.disk_bytes <= outbox.max_bytes + (256 << 10)  # + one put's write-ahead log
    assert (stats.depth, stats.bytes) == (truth.depth, truth.bytes)
    outbox.remove_delivered(outbox.peek(1000))
    assert (outbox.stats().depth, outbox.stats().bytes) == (0, 0)
    outbox.close()


def test_closing_folds_the_counters_for_an_earlier_runtime_started_after_a_rollback(
    tmp_path: Path,
) -> None:
    outbox = make_outbox(tmp_path / "o")
    for n in range(tally.FOLD_EVERY // 2):
        outbox.put("voice" if n % 2 else "defect", {"n": n})
    outbox.close()
    reopened = make_outbox(tmp_path / "o")
    counters = counter_rows(reopened)
    truth = counted_from_rows(reopened)
    assert counters[tally.BYTES_KEY] == truth.bytes
    assert {p: counters[tally.count_key(p)] for p in truth.counts} == truth.counts
    assert counters[tally.SEQ_KEY] >= reopened.last_seq()  # what it would give out next: free
    reopened.close()


def test_runs_of_groups_consecutive_numbers_in_order() -> None:
    assert tally.runs_of([]) == []
    assert tally.runs_of([9, 3, 4, 5, 11, 10, 4, 20]) == [range(3, 6), range(9, 12), range(20, 21)]


def test_deleting_a_run_with_messages_already_gone_counts_only_those_there(
    tmp_path: Path,
) -> None:
    """A drain's acknowledged run in which some messages expired or were evicted in between:
    the run is deleted key by key, and the counters lose only what was there."""
    outbox = make_outbox(tmp_path / "o")
    sent = [outbox.put("telemetry", {"n": n, "pad": "x" * n}) for n in range(40)]
    gone = [sent[3], sent[17], sent[18]]
    assert outbox.remove_expired(gone) == 3
    assert outbox.remove_delivered(sent) == 37
    stats = outbox.stats()
    assert (stats.depth, stats.bytes, stats.delivered_total) == (0, 0, 37)
    assert counted_from_rows(outbox).depth == 0
    outbox.close()


def test_deleting_runs_and_scattered_messages_keeps_the_counters_exact(tmp_path: Path) -> None:
    outbox = make_outbox(tmp_path / "o")
    kinds = list(PRIORITIES)
    sent = [outbox.put(kinds[n % 4], {"n": n, "pad": "y" * (n % 13)}) for n in range(300)]
    chosen = sent[10:200] + sent[201:203] + sent[250:251] + sent[260:290:3]
    assert outbox.remove_delivered(chosen) == len(chosen)
    stats, truth = outbox.stats(), counted_from_rows(outbox)
    assert (
        (stats.depth, stats.bytes)
        == (truth.depth, truth.bytes)
        == (
            300 - len(chosen),
            sum(len(m.to_bytes()) for m in sent if m not in chosen),
        )
    )
    assert stats.depth_by_priority == {p: n for p, n in truth.counts.items() if n}
    outbox.close()
