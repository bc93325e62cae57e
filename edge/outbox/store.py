"""The durable store-and-forward outbox, on diskcache's SQLite store.

Durability: diskcache is opened with SQLite ``journal_mode=WAL`` and ``synchronous=FULL``
(``sqlite_synchronous=2``): a transaction's WAL frames are fsync'ed before ``COMMIT`` returns,
so a message survives ``kill -9`` and a power cut once ``put`` has returned. Values are kept
inside SQLite (``disk_min_file_size`` above the largest message), because diskcache does not
fsync the separate files it uses for large values. diskcache's own eviction is off
(``eviction_policy="none"``); the outbox applies its cap itself, by priority.

Layout inside the cache: ``m:<seq, 20 digits>`` → message JSON, in acceptance order;
``s:<name>`` → counters (sequence, bytes, count per priority, delivered/expired/dropped totals)
and the elapsed-clock checkpoint. Every change to messages and counters is one transaction.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diskcache

from edge.config.model import MoltbotConfig
from edge.errors import MessageRejectedError, OutboxError, OutboxFullError
from edge.outbox.clock import (
    ClockCheckpoint,
    ClockSource,
    ElapsedClock,
    SystemClock,
    TimeSource,
    corrected_wall_time,
)
from edge.outbox.eviction import StoredEntry, choose_victims
from edge.outbox.message import OutboxMessage, validate_kind, validate_payload

logger = logging.getLogger(__name__)

MESSAGE_PREFIX = "m:"
SEQ_KEY = "s:seq"
BYTES_KEY = "s:bytes"
CLOCK_KEY = "s:clock"
TOTAL_KEYS = ("delivered", "expired", "dropped")
LOWEST_PRIORITY = -(10**6)  # for kinds the priorities table does not name
RESERVE_FILE = "space-reserve"
RESERVE_BYTES = 1 << 20  # released on a full disk so that deletes (which need WAL space) work
MIN_FREE_BYTES = 1 << 20  # below this, an I/O error on write is taken for a full disk
EVICT_TO_SHARE = 0.95  # free a little more than needed, so the next puts do not evict again

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


def message_key(seq: int) -> str:
    return f"{MESSAGE_PREFIX}{seq:020d}"


def _count_key(priority: int) -> str:
    return f"s:count:{priority}"


def _total_key(name: str) -> str:
    return f"s:total:{name}"


@dataclass(frozen=True)
class OutboxStats:
    depth: int
    bytes: int
    max_bytes: int
    oldest_age_s: float | None
    delivered_total: int
    expired_total: int
    dropped_total: int
    refused_total: int
    depth_by_priority: dict[int, int] = field(default_factory=dict)

    def estimated_drain_s(self, messages_per_s: float) -> float | None:
        return self.depth / messages_per_s if messages_per_s > 0 else None


Listener = Callable[[OutboxMessage], None]


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
        self.priorities = dict(priorities or {})
        self._topic_for = topic_for
        self._source = clock
        self._listeners: list[Listener] = []
        self._refused_total = 0
        self._lock = threading.Lock()
        try:
            directory.mkdir(parents=True, exist_ok=True)
            self._cache = diskcache.Cache(str(directory), **SQLITE_SETTINGS)
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(
                f"cannot open the outbox: {exc}",
                where=str(directory),
                hint="check that the data partition is mounted, writable and not full",
            ) from exc
        self._reserve = directory / RESERVE_FILE
        self._ensure_reserve()
        raw_checkpoint = self._cache.get(CLOCK_KEY)
        last = ClockCheckpoint.from_json(json.loads(raw_checkpoint)) if raw_checkpoint else None
        self.clock = ElapsedClock(clock, last)
        self.checkpoint_clock()

    @classmethod
    def from_config(
        cls, config: MoltbotConfig, *, has_rtc: bool = False, clock: ClockSource | None = None
    ) -> Outbox:
        cache = config.cache
        directory = config.paths().outbox_dir
        trust = cache.trust_wall_clock == "always" or (cache.trust_wall_clock == "auto" and has_rtc)
        from edge.uplink.topics import TopicScheme  # noqa: PLC0415 - avoid an import cycle

        topics = TopicScheme.from_config(config)
        return cls(
            directory,
            topic_for=topics.event,
            retention_hours=cache.retention_hours,
            max_bytes=cache.max_bytes or default_max_bytes(directory, cache.max_disk_share),
            max_message_bytes=cache.max_message_bytes,
            priorities=cache.priorities,
            clock=clock or SystemClock(cache.clock_sync_flag, trust_without_sync=trust),
        )

    # -- writing ---------------------------------------------------------------------------

    def put(self, kind: str, payload: object, *, qos: int = 1) -> OutboxMessage:
        """Store one event durably; returns only once it is on disk."""
        validate_kind(kind)
        data = validate_payload(payload)
        if qos not in (0, 1):
            raise MessageRejectedError(
                f"qos must be 0 or 1, got {qos}", where="qos", hint="events use QoS 1"
            )
        priority = self.priorities.get(kind, LOWEST_PRIORITY)
        source = self._source
        self._ensure_reserve()  # best effort: SQLite may still reuse pages freed by deletes
        try:
            with self._cache.transact():
                seq = int(self._cache.incr(SEQ_KEY))
                message = OutboxMessage(
                    id=str(uuid.uuid4()),
                    seq=seq,
                    kind=kind,
                    topic=self._topic_for(kind),
                    payload=data,
                    qos=qos,
                    priority=priority,
                    created_wall=source.wall(),
                    created_trusted=source.wall_is_trusted(),
                    created_boot_id=source.boot_id(),
                    created_boottime=source.boottime(),
                    created_elapsed=self.clock.now(),
                )
                raw = message.to_bytes()
                self._check_size(kind, len(raw))
                fits = self._make_room(message, len(raw))
                if fits:
                    self._cache.set(message_key(seq), raw)
                    self._adjust(priority, 1, len(raw))
                else:
                    self._adjust_total("dropped", 1)
        except (OSError, sqlite3.OperationalError, diskcache.Timeout) as exc:
            raise self._refused(kind, exc) from exc
        if not fits:
            raise OutboxFullError(
                f"the outbox is at its cap ({self.max_bytes} bytes) with messages of higher "
                f"priority than this {kind} message, which was dropped",
                where="cache.max_bytes",
                hint="raise cache.max_bytes or the priority of this kind, or restore the uplink",
            )
        for listener in list(self._listeners):
            listener(message)
        return message

    def _check_size(self, kind: str, size: int) -> None:
        if size > self.max_message_bytes:
            raise MessageRejectedError(
                f"{kind} message is {size} bytes, over cache.max_message_bytes "
                f"({self.max_message_bytes})",
                where="payload",
                hint="send large data (images) by reference, or raise the limit if the broker's "
                "message size limit allows it",
            )

    def _refused(self, kind: str, exc: Exception) -> OutboxError:
        self._refused_total += 1
        disk_full = (
            (isinstance(exc, OSError) and exc.errno == errno.ENOSPC)
            or "full" in str(exc).lower()
            or _free_bytes(self.directory) < MIN_FREE_BYTES
        )
        logger.error("outbox refused a %s message: %s", kind, exc)
        if disk_full:
            return OutboxFullError(
                f"the disk is full: this {kind} message was refused; stored messages are kept "
                "and keep syncing",
                where=str(self.directory),
                hint="free space on the data partition or lower cache.max_disk_share",
            )
        return OutboxError(
            f"cannot store the {kind} message: {exc}",
            where=str(self.directory),
            hint="check the data partition (mounted read-only? failing SD card?)",
        )

    def _make_room(self, incoming: OutboxMessage, size: int) -> bool:
        """Evict lowest-priority, oldest messages until ``size`` more bytes fit under the cap.

        False: only messages of higher priority fill the outbox; the incoming one must go.
        """
        used = int(self._cache.get(BYTES_KEY, 0))
        if used + size <= self.max_bytes:
            return True
        need = used + size - int(self.max_bytes * EVICT_TO_SHARE)
        victims = choose_victims(self._entries(), need, incoming.priority)
        if victims is None:
            return False
        for victim in victims:
            self._cache.delete(message_key(victim.seq))
            self._adjust(victim.priority, -1, -victim.size)
        self._adjust_total("dropped", len(victims))
        logger.warning(
            "outbox at its cap: dropped %d oldest lowest-priority message(s) for a %s message",
            len(victims),
            incoming.kind,
        )
        return True

    def _entries(self) -> Iterator[StoredEntry]:
        for message, size in self._iter_messages():
            yield StoredEntry(message.seq, message.priority, size)

    def _adjust(self, priority: int, count: int, size: int) -> None:
        self._cache.incr(_count_key(priority), count)
        self._cache.incr(BYTES_KEY, size)

    def _adjust_total(self, name: str, amount: int) -> None:
        if amount:
            self._cache.incr(_total_key(name), amount)

    def add_listener(self, listener: Listener) -> None:
        """Called with each message after it is durable (the uplink's live lane)."""
        self._listeners.append(listener)

    # -- reading ---------------------------------------------------------------------------

    def _iter_messages(self, start_seq: int = 0) -> Iterator[tuple[OutboxMessage, int]]:
        for key in self._cache.iterkeys():
            if not isinstance(key, str) or not key.startswith(MESSAGE_PREFIX):
                break  # message keys sort before the s: counters
            if int(key[len(MESSAGE_PREFIX) :]) < start_seq:
                continue
            raw = self._cache.get(key)
            if raw is not None:
                yield OutboxMessage.from_bytes(raw), len(raw)

    def first_seq(self) -> int | None:
        for key in self._cache.iterkeys():
            if isinstance(key, str) and key.startswith(MESSAGE_PREFIX):
                return int(key[len(MESSAGE_PREFIX) :])
            return None
        return None

    def last_seq(self) -> int:
        return int(self._cache.get(SEQ_KEY, 0))

    def get(self, seq: int) -> OutboxMessage | None:
        raw = self._cache.get(message_key(seq))
        return OutboxMessage.from_bytes(raw) if raw is not None else None

    def read_from(self, seq: int, limit: int) -> list[OutboxMessage]:
        """Up to ``limit`` messages with sequence ≥ ``seq``, oldest first."""
        found: list[OutboxMessage] = []
        first = self.first_seq()
        if first is None:
            return found
        current, last = max(seq, first), self.last_seq()
        while current <= last and len(found) < limit:
            message = self.get(current)
            if message is not None:
                found.append(message)
            current += 1
        return found

    def peek(self, count: int) -> list[OutboxMessage]:
        return self.read_from(0, count)

    def __len__(self) -> int:
        return sum(self._counts().values())

    def _counts(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for key in self._cache.iterkeys(reverse=True):
            if not isinstance(key, str) or not key.startswith("s:count:"):
                if isinstance(key, str) and key.startswith(MESSAGE_PREFIX):
                    break
                continue
            value = int(self._cache.get(key, 0))
            if value:
                counts[int(key.removeprefix("s:count:"))] = value
        return counts

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
            self._reserve.unlink(missing_ok=True)
            return self._remove_once(batch, reason)

    def _ensure_reserve(self) -> bool:
        """Keep a small file of free space that a full disk can give back to SQLite."""
        if self._reserve.exists():
            return True
        if _free_bytes(self.directory) < 2 * RESERVE_BYTES:
            return False
        try:
            with self._reserve.open("wb") as stream:
                os.posix_fallocate(stream.fileno(), 0, RESERVE_BYTES)
        except OSError as exc:
            self._reserve.unlink(missing_ok=True)
            logger.warning("cannot create the outbox space reserve: %s", exc)
            return False
        return True

    def _remove_once(self, messages: list[OutboxMessage], reason: str) -> int:
        removed = 0
        try:
            with self._cache.transact():
                for message in messages:
                    raw = self._cache.pop(message_key(message.seq), default=None)
                    if raw is not None:
                        removed += 1
                        self._adjust(message.priority, -1, -len(raw))
                self._adjust_total(reason, removed)
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
        counts = self._counts()
        return OutboxStats(
            depth=sum(counts.values()),
            bytes=int(self._cache.get(BYTES_KEY, 0)),
            max_bytes=self.max_bytes,
            oldest_age_s=self.age_s(oldest[0]) if oldest else None,
            delivered_total=totals["delivered"],
            expired_total=totals["expired"],
            dropped_total=totals["dropped"],
            refused_total=self._refused_total,
            depth_by_priority=counts,
        )

    def close(self) -> None:
        self.checkpoint_clock()
        self._cache.close()


def _free_bytes(directory: Path) -> int:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return 0


def default_max_bytes(directory: Path, share: float) -> int:
    """``share`` of the file system holding the outbox."""
    existing = next((p for p in (directory, *directory.parents) if p.exists()), Path("/"))
    return max(1 << 20, int(shutil.disk_usage(existing).total * share))
