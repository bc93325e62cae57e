"""A put's transaction (``rows.WriteTransaction``) and the sequence head it reuses
(``edge/outbox/head_memo.py``).

The head a connection's last put left is taken again only while nothing else has written:
other connections, other threads, other processes, this connection's own writes. Each such
writer in between must be seen, or a number would be given out twice (the row's unique key
refuses it, and the put fails). The transaction behaves as diskcache's ``transact()`` and
never leaves a failed commit open."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path

import diskcache
import pytest

from edge.errors import OutboxError
from edge.outbox import rows, tally
from edge.outbox.store import Outbox
from tests.support.outboxes import counted_from_rows, make_outbox


def assert_exact(outbox: Outbox) -> None:
    counted = counted_from_rows(outbox)
    stats = outbox.stats()
    assert (stats.depth, stats.bytes) == (counted.depth, counted.bytes)


def test_puts_of_two_outboxes_on_one_directory_interleave_without_a_number_twice(
    tmp_path: Path,
) -> None:
    first, second = make_outbox(tmp_path / "o"), make_outbox(tmp_path / "o")
    seqs = []
    for n in range(200):
        writer = first if n % 3 else second  # runs of two on one connection, then the other
        seqs.append(writer.put("telemetry", {"n": n}).seq)
    assert seqs == list(range(1, 201))
    assert_exact(first)
    first.close()
    second.close()


def test_puts_from_several_threads_each_on_its_connection_give_distinct_numbers(
    tmp_path: Path,
) -> None:
    outbox = make_outbox(tmp_path / "o")
    seqs: list[int] = []
    lock = threading.Lock()

    def put_many_times() -> None:
        for n in range(150):
            seq = outbox.put("telemetry", {"n": n}).seq
            with lock:
                seqs.append(seq)

    threads = [threading.Thread(target=put_many_times) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(seqs) == list(range(1, 601))
    assert_exact(outbox)
    outbox.close()


def _put_in_child(directory: Path, count: int) -> None:
    child = make_outbox(directory)
    for n in range(count):
        child.put("status", {"child": n})
    child.close()


def test_a_put_after_another_process_put_continues_after_its_numbers(tmp_path: Path) -> None:
    outbox = make_outbox(tmp_path / "o")
    assert [outbox.put("defect", {"n": n}).seq for n in range(3)] == [1, 2, 3]
    child = multiprocessing.get_context("spawn").Process(
        target=_put_in_child, args=(tmp_path / "o", 5)
    )
    child.start()
    child.join(60)
    assert child.exitcode == 0
    assert outbox.put("defect", {"after": True}).seq == 9
    assert_exact(outbox)
    outbox.close()


def test_a_put_after_this_connection_deleted_and_folded_reads_the_head_again(
    tmp_path: Path,
) -> None:
    outbox = make_outbox(tmp_path / "o")
    sent = [outbox.put("telemetry", {"n": n}) for n in range(tally.FOLD_EVERY + 5)]
    outbox.remove_delivered(sent)  # folds, moves the watermark, deletes the last row too
    assert outbox.put("telemetry", {}).seq == len(sent) + 1
    assert_exact(outbox)
    outbox.close()


def test_a_row_this_connection_wrote_besides_a_put_is_seen(tmp_path: Path) -> None:
    """A message row written around the outbox on the same connection (its own commits do not
    move data_version): the next put must not give out that row's number again."""
    outbox = make_outbox(tmp_path / "o")
    outbox.put("telemetry", {})  # the first put measures the disk: it leaves no head
    outbox.put("telemetry", {})
    with outbox._cache.transact():  # the same connection: data_version does not move
        rows.insert_values(outbox._cache, [(tally.message_key(3), b'{"seq":3}\n{}', 0)])
    assert outbox.put("telemetry", {}).seq == 4  # total_changes moved: read again
    outbox.close()


def test_write_transaction_rolls_back_on_an_error_and_joins_an_outer_one(tmp_path: Path) -> None:
    cache = diskcache.Cache(str(tmp_path / "c"))
    with pytest.raises(RuntimeError), rows.WriteTransaction(cache):
        cache.set("a", 1)
        raise RuntimeError("boom")
    assert cache.get("a") is None
    with cache.transact():
        with rows.WriteTransaction(cache):  # joins: no BEGIN inside a transaction
            cache.set("b", 2)
        assert cache._txn_id == threading.get_ident()  # still the outer one's
    assert cache.get("b") == 2
    cache.close()


def test_write_transaction_times_out_while_another_connection_holds_the_lock(
    tmp_path: Path,
) -> None:
    cache = diskcache.Cache(str(tmp_path / "c"), timeout=0.2)
    holder = sqlite3.connect(str(tmp_path / "c" / "cache.db"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(diskcache.Timeout), rows.WriteTransaction(cache):
            pass
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    with rows.WriteTransaction(cache):  # the lock is free again, and no mark was left behind
        cache.set("c", 3)
    cache.close()


class _CommitFailsOnce:
    """A connection whose next COMMIT fails as a disk error would, leaving the transaction
    open (what SQLite may do when the commit cannot be written)."""

    def __init__(self, real: sqlite3.Connection) -> None:
        self.real = real
        self.failed = False

    def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
        if sql == "COMMIT" and not self.failed:
            self.failed = True
            raise sqlite3.OperationalError("disk I/O error")
        return self.real.execute(sql, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


def test_a_failed_commit_is_rolled_back_and_the_next_put_works(tmp_path: Path) -> None:
    outbox = make_outbox(tmp_path / "o")
    kept = outbox.put("defect", {"n": 0})
    real = outbox._cache._con
    outbox._cache._local.con = _CommitFailsOnce(real)
    with pytest.raises(OutboxError, match="disk I/O error"):
        outbox.put("defect", {"n": 1})
    assert not real.in_transaction
    outbox._cache._local.con = real
    assert [m.seq for m in outbox.peek(10)] == [kept.seq]
    assert outbox.put("defect", {"n": 2}).seq == kept.seq + 1
    assert_exact(outbox)
    outbox.close()


def test_a_put_inside_a_transaction_rolled_back_leaves_no_head_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A put that joined the caller's transaction, which then rolled back: its rows and the
    ceiling it raised are gone (neither data_version nor total_changes says so), so the next
    put must read the head again, or it would give out numbers above the stored ceiling (what
    a runtime of the other A/B slot reads as the last number given out)."""
    monkeypatch.setattr(tally, "SEQ_RESERVE", 2)
    outbox = make_outbox(tmp_path / "o")
    for n in range(3):
        outbox.put("telemetry", {"n": n})
    with pytest.raises(RuntimeError), outbox._cache.transact():
        outbox.put("telemetry", {"inside": True})  # raises the ceiling, then rolled back
        raise RuntimeError("the caller's transaction fails")
    after = [outbox.put("telemetry", {"after": n}).seq for n in range(4)]
    ceiling = rows.counters_named(outbox._cache, (tally.SEQ_KEY,))[tally.SEQ_KEY]
    assert after[0] == 4  # the rolled-back number is given again: it was never stored
    assert ceiling >= outbox.last_seq() == after[-1]
    assert_exact(outbox)
    outbox.close()


def test_write_transaction_rolls_back_on_an_interrupt(tmp_path: Path) -> None:
    cache = diskcache.Cache(str(tmp_path / "c"))
    with pytest.raises(KeyboardInterrupt), rows.WriteTransaction(cache):
        cache.set("a", 1)
        raise KeyboardInterrupt
    assert cache.get("a") is None
    assert cache._txn_id is None
    assert not cache._con.in_transaction
    cache.close()
