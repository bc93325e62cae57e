"""The outbox's key layout and its counters (depth per priority, stored bytes), kept off the
commit of a put.

A put inserts its rows and nothing else: no counter row is written, so its commit syncs the
pages diskcache itself writes for a ``set`` and no more. The counters in the ``s:`` rows hold
what was counted up to a *watermark* (a sequence number, ``s:watermark``); the rows above it —
the *tail*, the puts since — are added whenever the counters are read (one statement, so a
reader sees one snapshot). The tail is folded into the counters inside every transaction that
deletes (before deleting, so a delete only ever subtracts rows that were counted) and by a put
once it is ``FOLD_EVERY`` rows long, which keeps reads cheap while the uplink is down for days.
Each message row carries its priority in diskcache's (unindexed) ``tag`` column for that count.

Sequence numbers: the last one given out is the highest of the highest stored key and the
watermark (a fold always precedes a delete, so it never goes down). ``s:seq`` is a *ceiling*
that every number given out stays under, raised ``SEQ_RESERVE`` at a time: a runtime from before
this layout — after an A/B rollback — reads ``s:seq`` as the last number given out, so it never
gives out one again. Such a runtime moves ``s:seq`` by one per put, and ``s:bytes`` and the
counts on each put and delete (its rows have no ``tag``); the mirrors ``s:seq-mirror`` and
``s:bytes-mirror``, which only this module writes, differing from them says that it ran, even
when it delivered everything it stored. Opening the outbox, and any later delete, then counts
everything again from the rows and takes ``s:seq`` as the last number given out
(:func:`settle`, :func:`recount`). Only this module moves the counters (:func:`move`).
An outbox from before this layout is taken over at open (:func:`adopt`): its counters were
exact, so its watermark is its last sequence number and nothing is recounted. ``close`` folds
the tail, so that a runtime from before this layout, started on the same data after an update
is rolled back, finds its counters exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import diskcache

from edge.outbox import rows
from edge.outbox.message import OutboxMessage

MESSAGE_PREFIX = "m:"
MESSAGES_END = "m;"  # sorts after every message key
COUNT_PREFIX = "s:count:"
SEQ_KEY = "s:seq"  # the ceiling of sequence numbers (before this layout: the last one given out)
BYTES_KEY = "s:bytes"
MIRROR_KEY = "s:bytes-mirror"  # s:bytes as this module last left it
SEQ_MIRROR_KEY = "s:seq-mirror"  # s:seq as this module last left it
WATERMARK_KEY = "s:watermark"
FOLD_EVERY = 64  # tail rows a put lets pile up before it folds them into the counters
RANGE_DELETE_MIN = 4  # consecutive messages deleted as one key range rather than key by key
SEQ_RESERVE = 4096  # sequence numbers the ceiling is raised by at a time


def message_key(seq: int) -> str:
    return f"{MESSAGE_PREFIX}{seq:020d}"


def seq_of(key: str) -> int:
    return int(key[len(MESSAGE_PREFIX) :])


def runs_of(seqs: Iterable[int]) -> list[range]:
    """Sequence numbers as runs of consecutive ones, in order (duplicates count once)."""
    runs: list[range] = []
    for seq in sorted(set(seqs)):
        if runs and seq == runs[-1].stop:
            runs[-1] = range(runs[-1].start, seq + 1)
        else:
            runs.append(range(seq, seq + 1))
    return runs


class Deleted(NamedTuple):
    """What :func:`delete_messages` found and deleted."""

    seqs: list[int]
    bytes: int


def delete_messages(cache: diskcache.Cache, seqs: Iterable[int]) -> Deleted:
    """Delete the messages with these sequence numbers (inside a transaction); returns those
    that were there and their stored bytes. A run of at least ``RANGE_DELETE_MIN``
    consecutive numbers — what a drain acknowledges — is measured and deleted as one key
    range (two statements, no row handed back to Python) when every message of it is there;
    the rest, and a run with gaps (some expired or evicted since), key by key."""
    present: list[int] = []
    size = 0
    one_by_one: list[str] = []
    for run in runs_of(seqs):
        if len(run) >= RANGE_DELETE_MIN:
            first, last = message_key(run[0]), message_key(run[-1])
            count, run_bytes = rows.measure_between(cache, first, last)
            if count == len(run):
                rows.delete_between(cache, first, last)
                present.extend(run)
                size += run_bytes
                continue
        one_by_one.extend(message_key(seq) for seq in run)
    if one_by_one:
        deleted = rows.delete_keys(cache, one_by_one)
        present.extend(seq_of(key) for key in deleted)
        size += sum(deleted.values())
    return Deleted(present, size)


def count_key(priority: int) -> str:
    return f"{COUNT_PREFIX}{priority}"


@dataclass
class Tally:
    """Stored messages by priority, and their bytes (as stored)."""

    counts: dict[int, int] = field(default_factory=dict)
    bytes: int = 0

    @property
    def depth(self) -> int:
        return sum(self.counts.values())

    def add(self, priority: int, count: int, size: int) -> None:
        self.counts[priority] = self.counts.get(priority, 0) + count
        self.bytes += size


class Head(NamedTuple):
    """What a put reads before giving out sequence numbers (a NamedTuple: made on every put)."""

    last_seq: int  # the last sequence number given out
    ceiling: int
    watermark: int
    counted_bytes: int  # bytes in the counters (the tail's are not in it)

    @property
    def tail_rows(self) -> int:
        """Rows put since the last fold, at most (a burst's dropped messages leave gaps)."""
        return self.last_seq - self.watermark


# The statements spell out the key layout above (tests/unit/test_outbox_tally.py checks that).
_TAIL = (
    "key > printf('m:%020d', coalesce((SELECT value FROM Cache WHERE key = 's:watermark'"
    " AND raw = 1), 0)) AND key < 'm;' AND raw = 1"
)
_HEAD_SQL = (
    "SELECT (SELECT value FROM Cache WHERE key = 's:watermark' AND raw = 1),"
    " (SELECT value FROM Cache WHERE key = 's:seq' AND raw = 1),"
    " (SELECT value FROM Cache WHERE key = 's:bytes' AND raw = 1),"
    " (SELECT key FROM Cache WHERE key > 'm:' AND key < 'm;' AND raw = 1"
    "  ORDER BY key DESC LIMIT 1)"
)
_MIRRORS_SQL = (
    "SELECT (SELECT value FROM Cache WHERE key = 's:seq' AND raw = 1),"
    " (SELECT value FROM Cache WHERE key = 's:seq-mirror' AND raw = 1),"
    " (SELECT value FROM Cache WHERE key = 's:bytes' AND raw = 1),"
    " (SELECT value FROM Cache WHERE key = 's:bytes-mirror' AND raw = 1)"
)
_TAIL_SQL = (
    "SELECT tag, count(*), total(length(value)) FROM Cache WHERE "  # noqa: S608 - constants only
    + _TAIL
    + " GROUP BY tag"
)
# The counters, s:bytes with its mirror, and the tail by priority: one statement, one snapshot.
_TALLY_SQL = (
    "SELECT 'count', key, value, 0 FROM Cache"  # noqa: S608 - constants only
    " WHERE key > 's:count:' AND key < 's:count;' AND raw = 1"
    " UNION ALL SELECT 'bytes', NULL,"
    " (SELECT value FROM Cache WHERE key = 's:bytes' AND raw = 1),"
    " (SELECT value FROM Cache WHERE key = 's:bytes-mirror' AND raw = 1)"
    " UNION ALL SELECT 'seq', NULL,"
    " (SELECT value FROM Cache WHERE key = 's:seq' AND raw = 1),"
    " (SELECT value FROM Cache WHERE key = 's:seq-mirror' AND raw = 1)"
    " UNION ALL SELECT 'tail', tag, count(*), total(length(value)) FROM Cache"
    " WHERE " + _TAIL + " GROUP BY tag"
)
_ROWS_SQL = (
    "SELECT key, tag, length(value), CASE WHEN tag IS NULL THEN value END FROM Cache"
    " WHERE key > 'm:' AND key < 'm;' AND raw = 1"
)


def read_head(cache: diskcache.Cache) -> Head:
    """The sequence head, as a put needs it. It trusts the counters: a runtime from before this
    layout cannot run beside this one (it is the other A/B slot's), and every process settles
    what it left when it opens the outbox (:func:`settle`)."""
    ((watermark, ceiling, counted_bytes, last_key),) = rows.query(cache, _HEAD_SQL)
    watermark = int(watermark or 0)
    last_stored = seq_of(str(last_key)) if last_key else 0
    return Head(
        last_seq=max(watermark, last_stored),
        ceiling=int(ceiling or 0),
        watermark=watermark,
        counted_bytes=int(counted_bytes or 0),
    )


def settle(cache: diskcache.Cache) -> bool:
    """Recount when a runtime from before this layout wrote since this module last did (inside
    a transaction); True when it did."""
    ((ceiling, ceiling_mirror, stored_bytes, bytes_mirror),) = rows.query(cache, _MIRRORS_SQL)
    mirrored = (int(ceiling_mirror or 0), int(bytes_mirror or 0))
    if (int(ceiling or 0), int(stored_bytes or 0)) == mirrored:
        return False
    recount(cache)
    return True


def reserve(cache: diskcache.Cache, head: Head, last_new: int) -> int:
    """Keep the ceiling above ``last_new`` (inside the put's transaction); the ceiling now."""
    if last_new <= head.ceiling:
        return head.ceiling
    ceiling = last_new + SEQ_RESERVE
    rows.set_counters(cache, {SEQ_KEY: ceiling, SEQ_MIRROR_KEY: ceiling})
    return ceiling


def read(cache: diskcache.Cache) -> Tally:
    """The counters plus the tail: what is stored now. While a runtime from before this
    layout has moved the counters (until the next fold), the rows are counted instead."""
    tally, foreign = Tally(), False
    for source, key, value, extra in rows.query(cache, _TALLY_SQL):
        if source == "count":
            tally.add(int(str(key)[len(COUNT_PREFIX) :]), int(value), 0)
        elif source == "bytes":
            tally.bytes += int(value or 0)
            foreign = foreign or int(value or 0) != int(extra or 0)
        elif source == "seq":
            foreign = foreign or int(value or 0) != int(extra or 0)
        elif key is None:  # a tail row without a priority tag: written before this layout
            foreign = True
        else:
            tally.add(int(key), int(value), int(extra))
    if foreign:
        return count_rows(cache)[0]
    tally.counts = {priority: n for priority, n in tally.counts.items() if n}
    return tally


def fold(cache: diskcache.Cache) -> None:
    """Add the tail to the counters and move the watermark to the last message (inside a
    transaction). Counts everything again when another writer moved the counters."""
    if settle(cache):
        return
    head = read_head(cache)
    if head.tail_rows <= 0:
        return
    tail = Tally()
    for tag, count, size in rows.query(cache, _TAIL_SQL):
        if tag is None:
            recount(cache)
            return
        tail.add(int(tag), int(count), int(size))
    move(cache, tail.counts, tail.bytes)
    rows.set_counters(cache, {WATERMARK_KEY: head.last_seq})


def move(
    cache: diskcache.Cache, counts: dict[int, int], size: int, others: dict[str, int] | None = None
) -> None:
    """Move the counts by priority and the bytes (with their mirror) by these amounts, and
    ``others`` (totals) with them: one statement (inside a transaction)."""
    deltas = {count_key(priority): n for priority, n in counts.items()}
    rows.add_to_counters(cache, (others or {}) | deltas | {BYTES_KEY: size, MIRROR_KEY: size})


def count_rows(cache: diskcache.Cache) -> tuple[Tally, int]:
    """Every stored message counted from the rows, and the highest sequence number stored.
    Rows written before this layout have no priority tag: it is read from their header."""
    tally, last_stored = Tally(), 0
    for key, tag, size, raw in rows.query(cache, _ROWS_SQL):
        priority = int(tag) if tag is not None else OutboxMessage.from_bytes(bytes(raw)).priority
        tally.add(priority, 1, int(size))
        last_stored = max(last_stored, seq_of(str(key)))
    return tally, last_stored


def recount(cache: diskcache.Cache) -> None:
    """Set the counters from the rows (inside a transaction). A ``s:seq`` that another writer
    moved is the last number it gave out: the watermark goes up to it, so none is given again;
    one this module reserved is not (a put may be giving those numbers out right now)."""
    tally, last_stored = count_rows(cache)
    found = rows.counters_named(cache, (SEQ_KEY, SEQ_MIRROR_KEY, WATERMARK_KEY))
    ceiling = found.get(SEQ_KEY, 0)
    given_out_elsewhere = ceiling if ceiling != found.get(SEQ_MIRROR_KEY, 0) else 0
    stale = rows.counters_between(cache, COUNT_PREFIX, COUNT_PREFIX[:-1] + ";")
    counts = dict.fromkeys(stale, 0) | {count_key(p): n for p, n in tally.counts.items()}
    watermark = max(last_stored, given_out_elsewhere, found.get(WATERMARK_KEY, 0))
    rows.set_counters(
        cache,
        counts
        | {
            BYTES_KEY: tally.bytes,
            MIRROR_KEY: tally.bytes,
            WATERMARK_KEY: watermark,
            SEQ_KEY: max(ceiling, watermark),
            SEQ_MIRROR_KEY: max(ceiling, watermark),
        },
    )


def adopt(cache: diskcache.Cache) -> None:
    """Take over an outbox written before this layout (inside a transaction; idempotent)."""
    found = rows.counters_named(cache, (WATERMARK_KEY, SEQ_KEY, BYTES_KEY))
    if WATERMARK_KEY in found:
        return
    # Before this layout the counters were exact and ``s:seq`` the last number given out.
    last = found.get(SEQ_KEY, 0)
    rows.set_counters(
        cache,
        {WATERMARK_KEY: last, SEQ_MIRROR_KEY: last, MIRROR_KEY: found.get(BYTES_KEY, 0)},
    )
