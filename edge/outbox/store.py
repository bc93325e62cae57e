"""The durable store-and-forward outbox, on diskcache's SQLite store.

Durability: diskcache is opened with SQLite ``journal_mode=WAL`` and ``synchronous=FULL``
(``sqlite_synchronous=2``): a transaction's WAL frames are fsync'ed before ``COMMIT`` returns,
so a message survives ``kill -9`` and a power cut once ``put`` has returned. Values are kept
inside SQLite (``disk_min_file_size`` above the largest message), because diskcache does not
fsync the separate files it uses for large values. diskcache's own eviction is off
(``eviction_policy="none"``); the outbox applies its cap itself, by priority. Removing
delivered or expired messages skips the fsync (see ``rows.commits_without_fsync``): a power cut
can only bring such messages back, to be sent again with the same id, never lose one.

Layout inside the cache: ``m:<seq, 20 digits>`` → the message (a JSON header line, then the
payload's JSON as sent: ``message.py``), in acceptance order, its priority in the row's tag;
``s:<name>`` → counters (count per priority, bytes, delivered/expired/dropped totals, the
sequence ceiling) and the elapsed-clock checkpoint. A put writes only its message rows: the
counts and bytes are brought up to date by the transactions that delete (``tally.py``).

Disk space: ``max_bytes`` caps what the outbox takes on disk — SQLite's used pages, its
write-ahead log (bounded by a checkpoint threshold and ``journal_size_limit`` scaled to the cap)
and the space reserve — so the cap, not a full disk, is what a flood of telemetry meets first.
A small reserve file is kept and released when the disk is full anyway (filled by something
else): at open, so that a device rebooted on a full disk still starts and drains, and for the
deletes of delivered messages.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol

import diskcache

from edge.config.model import CacheSettings
from edge.errors import MessageRejectedError, OutboxError, OutboxFullError
from edge.outbox import rows, tally
from edge.outbox.clock import (
    ClockCheckpoint,
    ClockSource,
    ElapsedClock,
    SystemClock,
    TimeSource,
    corrected_wall_time,
)
from edge.outbox.eviction import StoredEntry, choose_victims
from edge.outbox.head_memo import HeadMemo
from edge.outbox.message import (
    OutboxMessage,
    encode_payload,
    event_fields_json,
    new_message_id,
    stamp_fields_json,
    stored_bytes,
    validate_kind,
)
from edge.outbox.tally import MESSAGE_PREFIX, MESSAGES_END, message_key

logger = logging.getLogger(__name__)

CLOCK_KEY = "s:clock"
TOTAL_KEYS = ("delivered", "expired", "dropped")
LOWEST_PRIORITY = -(10**6)  # for kinds the priorities table does not name
RESERVE_FILE = "space-reserve"
WAL_FILE = "cache.db-wal"  # diskcache's database is cache.db
RESERVE_BYTES = 1 << 20  # released on a full disk so that deletes (which need WAL space) work
MIN_RESERVE_BYTES = 64 * 1024
DEFAULT_PAGE_BYTES = 4096
MAX_WAL_PAGES = 1000  # SQLite's default checkpoint threshold, for large caps
MIN_WAL_PAGES = 16
MIN_FREE_BYTES = 1 << 20  # below this, an I/O error on write is taken for a full disk
EVICT_TO_SHARE = 0.95  # free a little more than needed, so the next puts do not evict again
SURE_SHARE = 0.75  # below this share of the cap (estimated), a put skips measuring the disk
RESERVE_CHECK_S = 1.0  # how often a put looks whether the space reserve needs re-creating
SIZE_PROBE_SEQ = 10**19  # the widest sequence number: the size check's worst case
HEADER_BYTES_BOUND = 1024  # a stored message's fields but payload and topic take less
KNOWN_ROUTES = 256  # (kind, qos) pairs whose topic, priority and header fields accept keeps
PAGE_MESSAGES = 512  # messages read per query when walking the outbox
REMOVED_WITHOUT_FSYNC = ("delivered", "expired")  # losing such a delete only repeats work

SQLITE_SETTINGS: dict[str, Any] = {
    "sqlite_journal_mode": "wal",
    "sqlite_synchronous": 2,  # FULL: fsync at every commit
    "disk_min_file_size": 2**31,  # keep every value inside SQLite (fsync'ed)
    "eviction_policy": "none",
    "size_limit": 2**62,
    "statistics": False,
    "tag_index": False,
    "timeout": 60,
}


def _total_key(name: str) -> str:
    return f"s:total:{name}"


def reserve_bytes_for(max_bytes: int) -> int:
    """The space reserve for a cap: 1 MiB, an eighth of a small cap."""
    return min(RESERVE_BYTES, max(MIN_RESERVE_BYTES, max_bytes // 8))


def wal_pages_for(max_bytes: int) -> int:
    """Checkpoint threshold (pages) so the write-ahead log takes at most an eighth of the cap."""
    return min(MAX_WAL_PAGES, max(MIN_WAL_PAGES, max_bytes // 8 // DEFAULT_PAGE_BYTES))


def sqlite_settings(max_bytes: int) -> dict[str, Any]:
    wal_pages = wal_pages_for(max_bytes)
    return SQLITE_SETTINGS | {
        "sqlite_wal_autocheckpoint": wal_pages,
        "sqlite_journal_size_limit": wal_pages * DEFAULT_PAGE_BYTES,  # truncate after checkpoints
    }


@dataclass(frozen=True)
class OutboxStats:
    depth: int
    bytes: int  # of the stored messages
    max_bytes: int
    oldest_age_s: float | None
    delivered_total: int
    expired_total: int
    dropped_total: int
    refused_total: int
    depth_by_priority: dict[int, int] = field(default_factory=dict)
    disk_bytes: int = 0  # what counts against max_bytes: SQLite pages in use, its WAL, reserve

    def estimated_drain_s(self, messages_per_s: float) -> float | None:
        return self.depth / messages_per_s if messages_per_s > 0 else None


Listener = Callable[[OutboxMessage], None]


class AcceptedEvent(NamedTuple):
    """An event that passed validation (:meth:`Outbox.accept`), not yet stored (a NamedTuple,
    as the small records a put makes: a frozen dataclass costs three times as much to make)."""

    kind: str
    payload_json: bytes  # the payload's JSON text, as stored and sent
    qos: int
    priority: int
    topic: str
    fields_json: str  # the stored header's event fields (``message.event_fields_json``)


class _Route(NamedTuple):
    """Where a (kind, qos) goes and at what priority, with its header fields rendered."""

    priority: int
    topic: str
    fields_json: str


class Queued(Protocol):
    """What deleting needs of a stored message (an ``OutboxMessage`` or a ``StoredEntry``)."""

    @property
    def seq(self) -> int: ...
    @property
    def priority(self) -> int: ...


class _Stamp(NamedTuple):
    """The clocks read once for a put (or a burst of them)."""

    wall: float
    trusted: bool
    boot_id: str
    boottime: float
    elapsed: float
    fields_json: str  # the stored header's clock fields (``message.stamp_fields_json``)


@dataclass(frozen=True)
class _Measurement:
    """The outbox's disk use as last measured, with the payload bytes stored at that moment."""

    pages_bytes: int
    overhead_bytes: int  # write-ahead log + space reserve
    payload_bytes: int
    factor: float  # disk bytes per payload byte


class Outbox:
    """A durable FIFO of events with retention, a byte cap and priority eviction."""

    def __init__(
        self,
        directory: Path,
        *,
        topic_for: Callable[[str], str],
        retention_hours: float = 72.0,
        max_bytes: int = 1 << 30,
        max_message_bytes: int = 256 * 1024,
        priorities: dict[str, int] | None = None,
        clock: ClockSource,
    ) -> None:
        self.directory = directory
        self.retention_s = retention_hours * 3600.0
        self.max_bytes = max_bytes
        self.max_message_bytes = max_message_bytes
        self.priorities: Mapping[str, int] = MappingProxyType(dict(priorities or {}))
        self._topic_for = topic_for
        self._source = clock
        self._listeners: list[Listener] = []
        self._refused_total = 0
        self._lock = threading.Lock()
        self._reserve = directory / RESERVE_FILE
        self._reserve_bytes = reserve_bytes_for(max_bytes)
        self._reserve_check_due = 0.0
        self._wal_limit_bytes = wal_pages_for(max_bytes) * DEFAULT_PAGE_BYTES
        self._measured: _Measurement | None = None
        self._heads = HeadMemo()
        self._routes: dict[tuple[str, int], _Route] = {}
        self._cache = self._open_cache()
        self._adopt_layout()
        self._ensure_reserve()
        raw_checkpoint = self._cache.get(CLOCK_KEY)
        last = ClockCheckpoint.from_json(json.loads(raw_checkpoint)) if raw_checkpoint else None
        self.clock = ElapsedClock(clock, last)
        self.checkpoint_clock()

    @classmethod
    def from_settings(
        cls,
        cache: CacheSettings,
        directory: Path,
        topic_for: Callable[[str], str],
        *,
        has_rtc: bool = False,
        clock: ClockSource | None = None,
    ) -> Outbox:
        """An outbox in ``directory`` as the ``cache`` section says (``edge.wiring`` calls it)."""
        trust = cache.trust_wall_clock == "always" or (cache.trust_wall_clock == "auto" and has_rtc)
        return cls(
            directory,
            topic_for=topic_for,
            retention_hours=cache.retention_hours,
            max_bytes=cache.max_bytes or default_max_bytes(directory, cache.max_disk_share),
            max_message_bytes=cache.max_message_bytes,
            priorities=cache.priorities,
            clock=clock or SystemClock(cache.clock_sync_flag, trust_without_sync=trust),
        )

    def _open_cache(self) -> diskcache.Cache:
        """Open SQLite; on a full disk, give back the space reserve and try once more."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            return diskcache.Cache(str(self.directory), **sqlite_settings(self.max_bytes))
        except (OSError, sqlite3.Error) as exc:
            if not (self._disk_full(exc) and self._reserve.exists()):
                raise self._cannot_open(exc) from exc
            logger.warning("disk full while opening the outbox: releasing the space reserve")
            self._release_reserve()
        try:
            return diskcache.Cache(str(self.directory), **sqlite_settings(self.max_bytes))
        except (OSError, sqlite3.Error) as exc:
            raise self._cannot_open(exc) from exc

    def _adopt_layout(self) -> None:
        try:
            with rows.WriteTransaction(self._cache):
                tally.adopt(self._cache)
                tally.settle(self._cache)  # what a runtime from before tally.py left (rollback)
        except (OSError, sqlite3.Error, diskcache.Timeout) as exc:
            raise self._cannot_open(exc) from exc

    def _cannot_open(self, exc: Exception) -> OutboxError:
        return OutboxError(
            f"cannot open the outbox: {exc}",
            where=str(self.directory),
            hint="check that the data partition is mounted, writable and not full"
            + (" (it is full: free some space on it)" if self._disk_full(exc) else ""),
        )

    def _disk_full(self, exc: Exception) -> bool:
        return (
            (isinstance(exc, OSError) and exc.errno == errno.ENOSPC)
            or "full" in str(exc).lower()
            or _free_bytes(self.directory) < MIN_FREE_BYTES
        )

    # -- writing ---------------------------------------------------------------------------

    def put(self, kind: str, payload: object, *, qos: int = 1) -> OutboxMessage:
        """Store one event durably; returns only once it is on disk."""
        (message,) = self._store([self.accept(kind, payload, qos=qos)])
        if message is None:
            raise OutboxFullError(
                f"the outbox is at its cap ({self.max_bytes} bytes) with messages of higher "
                f"priority than this {kind} message, which was dropped",
                where="cache.max_bytes",
                hint="raise cache.max_bytes or the priority of this kind, or restore the uplink",
            )
        return message

    def put_many(self, events: Iterable[AcceptedEvent]) -> list[OutboxMessage | None]:
        """Store a burst of events in one transaction: one fsync, durable when this returns.

        ``events`` come from :meth:`accept` (so a bad one was refused, with its reason, before
        anything was stored). The answer is aligned with ``events``: ``None`` for an event the
        cap dropped (only higher-priority messages fill the outbox), which ``put`` would have
        raised :class:`OutboxFullError` for. A failed write (full disk) stores none of them.
        """
        return self._store(list(events))

    def accept(self, kind: str, payload: object, *, qos: int = 1) -> AcceptedEvent:
        """Validate one event for :meth:`put_many`; ``MessageRejectedError`` says what is wrong.

        The size limit is checked here, so a burst never fails halfway for one oversized
        event: a payload that comes near the limit is measured as the message it becomes
        (with the widest sequence number); a small one needs no measuring.
        """
        route = self._routes.get((kind, qos))
        if route is None:
            validate_kind(kind)  # what is wrong is said in this order: kind, payload, qos
        data = encode_payload(payload)
        if route is None:
            route = self._route(kind, qos)
        event = AcceptedEvent(kind, data, qos, route.priority, route.topic, route.fields_json)
        if len(data) + len(event.topic) + HEADER_BYTES_BOUND > self.max_message_bytes:
            probe = self._message(event, SIZE_PROBE_SEQ, self._stamp())
            self._check_size(kind, len(probe.to_bytes()))
        return event

    def _route(self, kind: str, qos: int) -> _Route:
        """Check the qos of a (valid) kind not seen with it before and keep the route (the
        first few hundred; the priorities table is read-only, so a route never goes stale)."""
        if qos not in (0, 1):
            raise MessageRejectedError(
                f"qos must be 0 or 1, got {qos}", where="qos", hint="events use QoS 1"
            )
        priority = self.priorities.get(kind, LOWEST_PRIORITY)
        topic = self._topic_for(kind)
        route = _Route(priority, topic, event_fields_json(kind, topic, qos, priority))
        if len(self._routes) < KNOWN_ROUTES:
            self._routes[kind, qos] = route
        return route

    def _stamp(self) -> _Stamp:
        source = self._source
        wall, trusted, boot_id = source.wall(), source.wall_is_trusted(), source.boot_id()
        boottime, elapsed = source.boottime(), self.clock.now()
        fields = stamp_fields_json(wall, trusted, boot_id, boottime, elapsed)
        return _Stamp(wall, trusted, boot_id, boottime, elapsed, fields)

    @staticmethod
    def _message(event: AcceptedEvent, seq: int, stamp: _Stamp) -> OutboxMessage:
        return OutboxMessage(
            id=new_message_id(),
            seq=seq,
            kind=event.kind,
            topic=event.topic,
            payload_json=event.payload_json,
            qos=event.qos,
            priority=event.priority,
            created_wall=stamp.wall,
            created_trusted=stamp.trusted,
            created_boot_id=stamp.boot_id,
            created_boottime=stamp.boottime,
            created_elapsed=stamp.elapsed,
        )

    @staticmethod
    def _row(message: OutboxMessage, event: AcceptedEvent, stamp: _Stamp) -> bytes:
        """``message.to_bytes()`` from the parts its event and stamp rendered once."""
        return stored_bytes(
            message.id, message.seq, event.fields_json, stamp.fields_json, event.payload_json
        )

    def _store(self, events: list[AcceptedEvent]) -> list[OutboxMessage | None]:
        """One transaction: sequence numbers, room under the cap, the rows (and, once the
        puts since the last fold are ``tally.FOLD_EVERY``, the counters)."""
        if not events:
            return []
        self._ensure_reserve_now_and_then()  # best effort: SQLite may reuse freed pages
        stamp = self._stamp()
        transaction = rows.WriteTransaction(self._cache)
        try:
            with transaction as connection:
                head, version = self._heads.read(self._cache, connection)
                messages = [
                    self._message(event, seq, stamp)
                    for seq, event in enumerate(events, start=head.last_seq + 1)
                ]
                ceiling = tally.reserve(self._cache, head, messages[-1].seq)
                encoded = [
                    self._row(message, event, stamp)
                    for message, event in zip(messages, events, strict=True)
                ]
                incoming = sum(map(len, encoded))
                stored_at_most = head.counted_bytes + head.tail_rows * self.max_message_bytes
                inserted_only = self._surely_fits(incoming, stored_at_most)
                stored: list[OutboxMessage | None]
                if inserted_only:
                    self._insert(messages, encoded)
                    stored = list(messages)
                else:
                    stored = self._store_near_cap(messages, encoded)
                if head.tail_rows + len(messages) >= tally.FOLD_EVERY:
                    tally.fold(self._cache)
                    inserted_only = False
        except (
            OSError,
            sqlite3.OperationalError,
            sqlite3.IntegrityError,
            diskcache.Timeout,
        ) as exc:
            self._heads.forget()
            raise self._refused([event.kind for event in events], exc) from exc
        if inserted_only and transaction.committed:  # the next put here may start from this
            left = tally.Head(messages[-1].seq, ceiling, head.watermark, head.counted_bytes)
            self._heads.leave(connection, version, left)
        else:
            self._heads.forget()
        if self._listeners:
            for maybe in stored:
                if maybe is not None:
                    for listener in list(self._listeners):
                        listener(maybe)
        return stored

    def _insert(self, messages: list[OutboxMessage], encoded: list[bytes]) -> None:
        """Insert the rows, each tagged with its priority: one statement, no counter."""
        rows.insert_values(
            self._cache,
            [
                (message_key(m.seq), raw, m.priority)
                for m, raw in zip(messages, encoded, strict=True)
            ],
        )

    def _store_near_cap(
        self, messages: list[OutboxMessage], encoded: list[bytes]
    ) -> list[OutboxMessage | None]:
        """Near the cap: one message at a time, evicting as the cap says (``None``: dropped). A
        later message of the burst may evict an earlier one (a defect after telemetry): that
        one is reported dropped, and its bytes no longer count as this transaction's."""
        stored: dict[int, int] = {}  # this burst's rows still stored → their size
        for message, raw in zip(messages, encoded, strict=True):
            victims = self._make_room(message, len(raw), sum(stored.values()))
            if victims is None:
                self._adjust_total("dropped", 1)
                continue
            for victim in victims:
                stored.pop(victim.seq, None)
            self._insert([message], [raw])
            stored[message.seq] = len(raw)
        return [message if message.seq in stored else None for message in messages]

    def _surely_fits(self, incoming: int, payload_at_most: int) -> bool:
        """True when ``incoming`` bytes fit under the cap by a wide margin, judged without
        measuring SQLite's pages (three PRAGMAs and two ``stat`` calls per put).

        The estimate is the last measurement plus what the stored payload grew by since (every
        process's puts count: ``payload_at_most`` is the counted bytes plus the widest message
        for each put not yet counted), times the measured overhead factor, plus
        the largest write-ahead log the checkpoint settings allow and this transaction's share
        of it. Near the cap (above ``SURE_SHARE`` of it) every put measures, as before.
        """
        last = self._measured
        if last is None:
            return False
        growth = max(0, payload_at_most - last.payload_bytes)
        estimate = (
            last.pages_bytes
            + (growth + 2 * incoming) * last.factor
            + max(last.overhead_bytes, self._wal_limit_bytes + self._reserve_bytes)
        )
        return estimate <= self.max_bytes * SURE_SHARE

    def _check_size(self, kind: str, size: int) -> None:
        if size > self.max_message_bytes:
            raise MessageRejectedError(
                f"{kind} message is {size} bytes, over cache.max_message_bytes "
                f"({self.max_message_bytes})",
                where="payload",
                hint="send large data (images) by reference, or raise the limit if the broker's "
                "message size limit allows it",
            )

    def _refused(self, kinds: list[str], exc: Exception) -> OutboxError:
        self._refused_total += len(kinds)
        disk_full = self._disk_full(exc)
        kind = kinds[0] if len(set(kinds)) == 1 else "/".join(sorted(set(kinds)))
        what = (
            f"this {kind} message was" if len(kinds) == 1 else f"these {len(kinds)} messages were"
        )
        logger.error("outbox refused %d %s message(s): %s", len(kinds), kind, exc)
        if disk_full:
            return OutboxFullError(
                f"the disk is full: {what} refused; stored messages are kept and keep syncing",
                where=str(self.directory),
                hint="free space on the data partition or lower cache.max_disk_share",
            )
        return OutboxError(
            f"cannot store {what.removesuffix(' was').removesuffix(' were')}: {exc}",
            where=str(self.directory),
            hint="check the data partition (mounted read-only? failing SD card?)",
        )

    def _make_room(
        self, incoming: OutboxMessage, size: int, pending: int = 0
    ) -> list[StoredEntry] | None:
        """Evict lowest-priority, oldest messages until ``size`` more bytes fit under the cap.

        The cap is on disk bytes (:meth:`_disk_usage`); a message takes more on disk than its
        length (SQLite rows, indexes, page slack), by a factor measured on what is stored.
        ``pending``: bytes this transaction stored already (a burst); the write-ahead log
        grows by them at commit, so they count twice until then.
        Returns the messages evicted (none when it fits as it is); None: only messages of
        higher priority fill the outbox, and the incoming one must go.
        """
        payload = tally.read(self._cache).bytes
        pages_bytes, overhead_bytes = self._disk_usage()
        factor = min(8.0, max(1.0, pages_bytes / payload)) if payload else 1.0
        self._measured = _Measurement(pages_bytes, overhead_bytes, payload, factor)
        overhead_bytes += int(pending * factor)
        incoming_disk = int(size * factor)
        if pages_bytes + overhead_bytes + incoming_disk <= self.max_bytes:
            return []
        need_disk = (
            pages_bytes + overhead_bytes + incoming_disk - int(self.max_bytes * EVICT_TO_SHARE)
        )
        need = int(need_disk / factor) + 1
        victims = choose_victims(self._entries(), need, incoming.priority)
        if victims is None:
            return None
        self._delete(victims, "dropped")
        logger.warning(
            "outbox at its cap: dropped %d oldest lowest-priority message(s) for a %s message",
            len(victims),
            incoming.kind,
        )
        return victims

    def _disk_usage(self) -> tuple[int, int]:
        """(bytes of SQLite pages in use, bytes of its write-ahead log + the space reserve)."""
        sql = self._cache._sql  # diskcache has no public page statistics
        ((page_count,),) = sql("PRAGMA page_count").fetchall()
        ((free_pages,),) = sql("PRAGMA freelist_count").fetchall()
        ((page_size,),) = sql("PRAGMA page_size").fetchall()
        pages = (int(page_count) - int(free_pages)) * int(page_size)
        return pages, _file_bytes(self.directory / WAL_FILE) + _file_bytes(self._reserve)

    def _entries(self) -> Iterator[StoredEntry]:
        for message, size in self._iter_messages():
            yield StoredEntry(message.seq, message.priority, size)

    def _adjust_total(self, name: str, amount: int) -> None:
        if amount:
            self._cache.incr(_total_key(name), amount)

    def add_listener(self, listener: Listener) -> None:
        """Called with each message after it is durable (the uplink's live lane)."""
        self._listeners.append(listener)

    # -- reading ---------------------------------------------------------------------------

    def _iter_messages(self, start_seq: int = 0) -> Iterator[tuple[OutboxMessage, int]]:
        after = max(0, start_seq - 1)
        while True:
            found = rows.values_after(self._cache, message_key(after), MESSAGES_END, PAGE_MESSAGES)
            for _key, raw in found:
                message = OutboxMessage.from_bytes(raw)
                yield message, len(raw)
                after = message.seq
            if len(found) < PAGE_MESSAGES:
                return

    def first_seq(self) -> int | None:
        found = rows.values_after(self._cache, message_key(0), MESSAGES_END, 1)
        return int(found[0][0][len(MESSAGE_PREFIX) :]) if found else None

    def last_seq(self) -> int:
        """The last sequence number given out (it never goes down)."""
        return tally.read_head(self._cache).last_seq

    def get(self, seq: int) -> OutboxMessage | None:
        raw = self._cache.get(message_key(seq))
        return OutboxMessage.from_bytes(raw) if raw is not None else None

    def read_from(self, seq: int, limit: int) -> list[OutboxMessage]:
        """Up to ``limit`` messages with sequence ≥ ``seq``, oldest first."""
        return self.page(max(0, seq - 1), limit)

    def peek(self, count: int) -> list[OutboxMessage]:
        return self.page(0, count)

    def page(self, after_seq: int, limit: int) -> list[OutboxMessage]:
        """Up to ``limit`` messages with a sequence number above ``after_seq``, oldest first.

        One query on the key index (gaps left by delivered or evicted messages cost nothing),
        so a listing — or the uplink's drain — pages through any backlog with ``after_seq`` =
        the last one it got.
        """
        found = rows.values_after(self._cache, message_key(after_seq), MESSAGES_END, limit)
        return [OutboxMessage.from_bytes(raw) for _key, raw in found]

    def __len__(self) -> int:
        return sum(self._counts().values())

    def _counts(self) -> dict[int, int]:
        return tally.read(self._cache).counts

    # -- time ------------------------------------------------------------------------------

    def age_s(self, message: OutboxMessage) -> float:
        return max(0.0, self.clock.now() - message.created_elapsed)

    def remaining_s(self, message: OutboxMessage) -> float:
        return self.retention_s - self.age_s(message)

    def created_at(self, message: OutboxMessage) -> tuple[float, TimeSource]:
        return corrected_wall_time(
            created_wall=message.created_wall,
            created_boottime=message.created_boottime,
            created_boot_id=message.created_boot_id,
            created_trusted=message.created_trusted,
            source=self._source,
        )

    def checkpoint_clock(self) -> None:
        try:
            self._cache.set(CLOCK_KEY, json.dumps(self.clock.checkpoint().to_json()))
        except (OSError, sqlite3.OperationalError) as exc:
            logger.warning("cannot save the outbox clock checkpoint: %s", exc)

    # -- removing --------------------------------------------------------------------------

    def remove_delivered(self, messages: Iterable[OutboxMessage]) -> int:
        """Delete acknowledged messages in one transaction; returns how many were present."""
        return self._remove(messages, "delivered")

    def remove_expired(self, messages: Iterable[OutboxMessage]) -> int:
        """Delete messages found past their retention at send time."""
        return self._remove(messages, "expired")

    def _remove(self, messages: Iterable[OutboxMessage], reason: str) -> int:
        batch = list(messages)
        try:
            return self._remove_once(batch, reason)
        except OutboxError:
            if not self._reserve.exists():
                raise
            logger.warning("disk full while removing messages: releasing the space reserve")
            self._release_reserve()
            return self._remove_once(batch, reason)

    def _delete(self, items: Sequence[Queued], reason: str) -> int:
        """Delete stored messages (``tally.delete_messages``: a statement per run of consecutive
        ones) and adjust the counters once per priority, after folding the puts since the last
        fold into them (``tally.py``); call inside a transaction. Returns how many were still
        there."""
        tally.fold(self._cache)
        priority_of = {item.seq: item.priority for item in items}
        deleted = tally.delete_messages(self._cache, priority_of)
        counts: dict[int, int] = {}
        for seq in deleted.seqs:
            counts[priority_of[seq]] = counts.get(priority_of[seq], 0) - 1
        removed = len(deleted.seqs)
        tally.move(self._cache, counts, -deleted.bytes, {_total_key(reason): removed})
        return removed

    def _ensure_reserve_now_and_then(self) -> None:
        """:meth:`_ensure_reserve` at most once a second (a ``stat`` per put is measurable)."""
        now = time.monotonic()
        if now >= self._reserve_check_due:
            self._reserve_check_due = now + RESERVE_CHECK_S
            self._ensure_reserve()

    def _release_reserve(self) -> None:
        self._reserve.unlink(missing_ok=True)
        self._reserve_check_due = 0.0  # the next put tries to take it back

    def _ensure_reserve(self) -> bool:
        """Keep a small file of free space that a full disk can give back to SQLite."""
        if self._reserve.exists():
            return True
        if _free_bytes(self.directory) < 2 * self._reserve_bytes:
            return False
        try:
            with self._reserve.open("wb") as stream:
                os.posix_fallocate(stream.fileno(), 0, self._reserve_bytes)
        except OSError as exc:
            self._reserve.unlink(missing_ok=True)
            logger.warning("cannot create the outbox space reserve: %s", exc)
            return False
        return True

    def _remove_once(self, messages: list[OutboxMessage], reason: str) -> int:
        """One transaction; delivered and expired messages are removed without an fsync (a
        power cut may bring them back, to be sent or expired again: nothing is lost)."""
        relaxed = reason in REMOVED_WITHOUT_FSYNC
        try:
            with (
                rows.commits_without_fsync(self._cache) if relaxed else nullcontext(),
                rows.WriteTransaction(self._cache),
            ):
                removed = self._delete(messages, reason)
        except (OSError, sqlite3.OperationalError, diskcache.Timeout) as exc:
            raise OutboxError(
                f"cannot remove {reason} messages: {exc}; they stay queued (a later retry or "
                "a resend after reconnect may deliver some twice, with the same id)",
                where=str(self.directory),
                hint="free space on the data partition",
            ) from exc
        return removed

    def expire(self) -> int:
        """Remove messages older than the retention; ages come from the elapsed clock."""
        expired: list[OutboxMessage] = []
        for message, _size in self._iter_messages():
            if self.remaining_s(message) > 0:
                break  # acceptance order is age order
            expired.append(message)
        count = self._remove(expired, "expired") if expired else 0
        if count:
            logger.warning(
                "expired %d message(s) older than %.0f h (kinds: %s)",
                count,
                self.retention_s / 3600,
                ", ".join(sorted({m.kind for m in expired})),
            )
        self.checkpoint_clock()
        return count

    def purge_older_than(self, hours: float) -> int:
        """Operator's purge: remove messages older than ``hours``, counted as dropped."""
        limit_s = hours * 3600.0
        old = [m for m, _ in self._iter_messages() if self.age_s(m) >= limit_s]
        return self._remove(old, "dropped") if old else 0

    # -- reporting -------------------------------------------------------------------------

    def stats(self) -> OutboxStats:
        oldest = next(self._iter_messages(), None)
        totals = {name: int(self._cache.get(_total_key(name), 0)) for name in TOTAL_KEYS}
        stored = tally.read(self._cache)
        pages_bytes, overhead_bytes = self._disk_usage()
        return OutboxStats(
            depth=stored.depth,
            bytes=stored.bytes,
            max_bytes=self.max_bytes,
            oldest_age_s=self.age_s(oldest[0]) if oldest else None,
            delivered_total=totals["delivered"],
            expired_total=totals["expired"],
            dropped_total=totals["dropped"],
            refused_total=self._refused_total,
            depth_by_priority=stored.counts,
            disk_bytes=pages_bytes + overhead_bytes,
        )

    def close(self) -> None:
        """Fold the counters (``tally.py``: a runtime from before it, after an update is rolled
        back, then finds them exact), save the clock checkpoint, close SQLite."""
        try:
            with rows.WriteTransaction(self._cache):
                tally.fold(self._cache)
        except (OSError, sqlite3.Error, diskcache.Timeout) as exc:
            logger.warning("cannot fold the outbox counters at close: %s", exc)
        self.checkpoint_clock()
        self._cache.close()


def _file_bytes(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _free_bytes(directory: Path) -> int:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return 0


def default_max_bytes(directory: Path, share: float) -> int:
    """``share`` of the file system holding the outbox."""
    existing = next((p for p in (directory, *directory.parents) if p.exists()), Path("/"))
    return max(1 << 20, int(shutil.disk_usage(existing).total * share))
