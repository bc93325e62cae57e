"""The channel between the appliance and its link process: ordered batches over a socket pair.

Both ends hand items to a :class:`BatchSender` from any thread; its own thread sends whatever
piled up since its last send as one message (a list, in the order the items were handed in).
Under load that is one system call and one pickle for many messages; when idle, one item goes
out at once. The receiving end gets the lists in order (``Connection.recv``).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

logger = logging.getLogger(__name__)

Item = tuple[Any, ...]


class ChannelClosedError(Exception):
    """The other end is gone (it exited, or was killed)."""


class BatchSender:
    """``put`` from any thread; one thread sends the items in order, batched."""

    def __init__(self, connection: Connection, name: str) -> None:
        self._connection = connection
        self._items: deque[Item] = deque()
        self._wake = threading.Event()
        self._closing = False
        self.broken = threading.Event()  # set when a send failed: the other end is gone
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, item: Item) -> None:
        if self.broken.is_set():
            raise ChannelClosedError("the link channel is closed")
        self._items.append(item)
        if not self._wake.is_set():
            self._wake.set()

    def close(self, timeout_s: float = 2.0) -> None:
        """Send what is queued, then stop the thread."""
        self._closing = True
        self._wake.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        items = self._items
        while True:
            self._wake.wait()
            self._wake.clear()  # before taking: an item put from here on wakes the next round
            batch = []
            while items:
                batch.append(items.popleft())  # only this thread takes: never empty here
            if batch:
                try:
                    self._connection.send(batch)
                except (OSError, ValueError) as exc:  # the other end is gone
                    logger.debug("link channel send failed: %s", exc)
                    self.broken.set()
                    return
                except Exception:  # an item that cannot be sent: the channel is unusable
                    logger.exception("the link channel cannot send; it is closed")
                    self.broken.set()
                    return
            if self._closing and not items:
                return
