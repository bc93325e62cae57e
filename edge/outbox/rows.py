"""The outbox's rows in diskcache's ``Cache`` table, read and written with plain SQL.

diskcache's per-key API costs two to four statements per key (a SELECT before every write, a
cull query after every insert, a SELECT + UPDATE per ``incr``). The outbox's hot paths — a put,
a burst of puts, a page of the backlog, a batch of acknowledged deletes — are one statement
each here. They run on diskcache's own connection, inside the caller's transaction
(:class:`WriteTransaction` or ``Cache.transact()``), and store rows as ``Cache.set`` does for a
``str`` key and a ``bytes``/``int`` value (raw key, ``MODE_RAW`` value inside SQLite, no
expiry), so ``Cache.get``, ``iterkeys`` and diskcache's count/size triggers see them as their
own; message rows also carry their priority in the unindexed ``tag`` column (``tally.py``
counts by it).
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import diskcache
from diskcache.core import MODE_RAW

MAX_SQL_VARIABLES = 900  # well under SQLite's limit (32 766 since 3.32; 999 before)

_INSERT = (
    "INSERT INTO Cache(key, raw, store_time, expire_time, access_time, access_count, tag, size,"
    " mode, filename, value) VALUES (?, 1, ?, NULL, ?, 0, ?, 0, ?, NULL, ?)"
)


def _connection(cache: diskcache.Cache) -> sqlite3.Connection:
    connection: sqlite3.Connection = cache._con  # this thread's connection, as diskcache uses
    return connection


def data_version(connection: sqlite3.Connection) -> int:
    """SQLite's ``data_version``: it changes when *another* connection (of any process) commits
    a change, never for this connection's own commits."""
    ((version,),) = connection.execute("PRAGMA data_version").fetchall()
    return int(version)


class WriteTransaction:
    """``with WriteTransaction(cache):`` is ``with cache.transact():`` with less around it (a
    put's transaction is its hottest path): the same ``BEGIN IMMEDIATE`` / ``COMMIT``,
    ``ROLLBACK`` on any exception, ``diskcache.Timeout`` when the lock cannot be had within the
    cache's timeout, and the same nesting rule: inside a transaction of this thread (either
    kind), it joins that one — and then what it wrote is committed, or rolled back, with that
    one (``committed`` stays False)."""

    __slots__ = ("_began", "_cache", "_connection", "committed")

    def __init__(self, cache: diskcache.Cache) -> None:
        self._cache = cache
        self._connection = _connection(cache)  # this thread's
        self._began = False
        self.committed = False  # True once this transaction's own COMMIT has succeeded

    def __enter__(self) -> sqlite3.Connection:
        cache, connection = self._cache, self._connection
        thread = threading.get_ident()
        if cache._txn_id == thread:  # diskcache's own mark of the thread in a transaction
            return connection
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            raise diskcache.Timeout from None
        cache._txn_id = thread
        self._began = True
        return connection

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if not self._began:
            return
        self._began = False
        self._cache._txn_id = None
        connection = self._connection
        try:
            connection.execute("COMMIT" if kind is None else "ROLLBACK")
        except sqlite3.Error:
            if connection.in_transaction:  # a failed COMMIT may leave it open: never reuse that
                with suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
            raise
        self.committed = kind is None


def insert_values(cache: diskcache.Cache, rows: Sequence[tuple[str, bytes, int]]) -> None:
    """Insert new (key, value, tag) rows (the keys must not exist yet: the table's unique
    index refuses them)."""
    now = time.time()
    connection = _connection(cache)
    if len(rows) == 1:  # a single put: ``execute`` costs less than ``executemany``
        ((key, value, tag),) = rows
        connection.execute(_INSERT, (key, now, now, tag, MODE_RAW, value))
        return
    connection.executemany(
        _INSERT, [(key, now, now, tag, MODE_RAW, value) for key, value, tag in rows]
    )


def query(cache: diskcache.Cache, sql: str, parameters: Sequence[object] = ()) -> list[Any]:
    """Every row a read-only statement gives."""
    return _connection(cache).execute(sql, parameters).fetchall()


def counters_named(cache: diskcache.Cache, keys: Sequence[str]) -> dict[str, int]:
    """Several counters in one query; a counter never incremented is absent."""
    marks = ",".join("?" * len(keys))
    found = (
        _connection(cache)
        .execute(
            f"SELECT key, value FROM Cache WHERE key IN ({marks}) AND raw = 1",  # noqa: S608 - placeholders
            list(keys),
        )
        .fetchall()
    )
    return {str(key): int(value) for key, value in found}


def counters_between(cache: diskcache.Cache, after_key: str, before_key: str) -> dict[str, int]:
    found = (
        _connection(cache)
        .execute(
            "SELECT key, value FROM Cache WHERE key > ? AND key < ? AND raw = 1",
            (after_key, before_key),
        )
        .fetchall()
    )
    return {str(key): int(value) for key, value in found}


def add_to_counters(cache: diskcache.Cache, deltas: dict[str, int]) -> None:
    """Several ``incr`` in one statement; a counter seen for the first time is inserted."""
    changed = {key: delta for key, delta in deltas.items() if delta}
    if not changed:
        return
    connection = _connection(cache)
    updated = connection.execute(
        _update_counters_sql(len(changed)),
        [*(item for pair in changed.items() for item in pair), *changed],
    ).rowcount
    if updated == len(changed):
        return  # every counter existed (all but the first time): no need to ask which
    present = counters_named(cache, list(changed))
    now = time.time()
    for key in changed.keys() - present.keys():
        connection.execute(_INSERT, (key, now, now, None, MODE_RAW, changed[key]))


def set_counters(cache: diskcache.Cache, values: dict[str, int]) -> None:
    """Set counters to values; a counter seen for the first time is inserted."""
    connection = _connection(cache)
    now = time.time()
    for key, value in values.items():
        updated = connection.execute(
            "UPDATE Cache SET value = ? WHERE key = ? AND raw = 1", (value, key)
        ).rowcount
        if not updated:
            connection.execute(_INSERT, (key, now, now, None, MODE_RAW, value))


@functools.lru_cache(maxsize=16)
def _update_counters_sql(count: int) -> str:
    cases = " ".join("WHEN ? THEN ?" for _ in range(count))
    marks = ",".join("?" * count)
    return (
        f"UPDATE Cache SET value = value + CASE key {cases} END"  # noqa: S608 - placeholders
        f" WHERE raw = 1 AND key IN ({marks})"
    )


def values_after(
    cache: diskcache.Cache, after_key: str, before_key: str, limit: int
) -> list[tuple[str, bytes]]:
    """Up to ``limit`` (key, value) rows with ``after_key < key < before_key``, in key order."""
    rows = (
        _connection(cache)
        .execute(
            "SELECT key, value FROM Cache WHERE key > ? AND key < ? AND raw = 1"
            " ORDER BY key LIMIT ?",
            (after_key, before_key, max(0, limit)),
        )
        .fetchall()
    )
    return [(str(key), bytes(value)) for key, value in rows]


def delete_keys(cache: diskcache.Cache, keys: Iterable[str]) -> dict[str, int]:
    """Delete the keys that exist; returns {key: stored value length} of those deleted."""
    connection = _connection(cache)
    wanted = list(keys)
    deleted: dict[str, int] = {}
    for start in range(0, len(wanted), MAX_SQL_VARIABLES):
        chunk = wanted[start : start + MAX_SQL_VARIABLES]
        marks = ",".join("?" * len(chunk))
        rows = connection.execute(
            f"DELETE FROM Cache WHERE raw = 1 AND key IN ({marks}) RETURNING key, length(value)",  # noqa: S608 - only placeholders
            chunk,
        ).fetchall()
        deleted.update((str(key), int(size)) for key, size in rows)
    return deleted


def measure_between(cache: diskcache.Cache, first_key: str, last_key: str) -> tuple[int, int]:
    """How many rows have ``first_key <= key <= last_key``, and their values' bytes."""
    ((count, size),) = (
        _connection(cache)
        .execute(
            "SELECT count(*), total(length(value)) FROM Cache"
            " WHERE key >= ? AND key <= ? AND raw = 1",
            (first_key, last_key),
        )
        .fetchall()
    )
    return int(count), int(size)


def delete_between(cache: diskcache.Cache, first_key: str, last_key: str) -> int:
    """Delete every row with ``first_key <= key <= last_key``; how many there were. One index
    seek for the range, where ``delete_keys`` makes one per key and returns each row."""
    deleted: int = (
        _connection(cache)
        .execute("DELETE FROM Cache WHERE key >= ? AND key <= ? AND raw = 1", (first_key, last_key))
        .rowcount
    )
    return deleted


@contextmanager
def commits_without_fsync(cache: diskcache.Cache) -> Iterator[None]:
    """Commits on this thread's connection inside the block skip the fsync.

    In WAL mode with ``synchronous=NORMAL`` a commit can be rolled back by a power cut, never
    torn, and the next full-sync commit (any process's: the fsync covers the whole log) makes
    it durable too. For changes whose loss only repeats work — deleting acknowledged messages:
    at worst they are sent again, with the same id — never for accepting one.
    """
    connection = _connection(cache)
    ((previous,),) = connection.execute("PRAGMA synchronous").fetchall()
    connection.execute("PRAGMA synchronous = NORMAL")
    try:
        yield
    finally:
        connection.execute(f"PRAGMA synchronous = {int(previous)}")
