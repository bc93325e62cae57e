"""The sequence head a put left, taken again by the next put on the same connection.

A put reads the head (``tally.read_head``: the last sequence number given out, the ceiling, the
watermark, the counted bytes) inside its transaction: one statement of four sub-queries. When
nothing has written to the outbox since this connection's last put, the head is the one that
put left, and it is taken from here instead. "Nothing has written" is asked of SQLite, not
assumed: no other connection, of this process or another, committed since (``PRAGMA
data_version`` is unchanged, one cheap statement) and this connection changed no row since that
put (its ``total_changes`` is the same). Anything else — a delete, a fold, another process's
put, the other A/B slot's runtime, a transaction rolled back after a change — reads the head
again. A put that joined a transaction the caller holds leaves nothing here (that transaction
may still roll back, and a rollback moves neither number).

Each thread has its own connection (diskcache's), so the memo is kept per thread and tied to
the connection it was read on: a closed cache, or a child process after a fork, reads again.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import NamedTuple

import diskcache

from edge.outbox import rows, tally
from edge.outbox.tally import Head


class _Left(NamedTuple):
    """What a put left: the head after it, and the connection's state when it committed."""

    connection: sqlite3.Connection
    version: int  # the connection's data_version during the put
    changes: int  # the connection's total_changes after the put
    head: Head


class HeadMemo:
    """``read`` inside a put's transaction; ``leave`` once it has committed, with the head it
    left; ``forget`` when the put did more than insert (a fold, eviction) or failed."""

    def __init__(self) -> None:
        self._local = threading.local()

    def read(self, cache: diskcache.Cache, connection: sqlite3.Connection) -> tuple[Head, int]:
        """The head, and the ``data_version`` it was read under (for :meth:`leave`), inside a
        write transaction on ``connection`` (this thread's connection to ``cache``)."""
        version = rows.data_version(connection)
        left: _Left | None = getattr(self._local, "left", None)
        if (
            left is not None
            and left.connection is connection
            and left.version == version
            and left.changes == connection.total_changes
        ):
            return left.head, version
        return tally.read_head(cache), version

    def leave(self, connection: sqlite3.Connection, version: int, head: Head) -> None:
        self._local.left = _Left(connection, version, connection.total_changes, head)

    def forget(self) -> None:
        self._local.left = None
