"""Recent events for ``GET /v1/events``, and a live feed for server-sent-event subscribers."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Any

from edge.outbox.message import OutboxMessage

RECENT_EVENTS = 200
SUBSCRIBER_QUEUE = 1000


class EventFeed:
    """Fed by the outbox (any thread); read by the API (the event loop)."""

    def __init__(self) -> None:
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_EVENTS)
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def on_accepted(self, message: OutboxMessage) -> None:
        event = {
            "id": message.id,
            "kind": message.kind,
            "topic": message.topic,
            "created_wall": message.created_wall,
            "data": message.payload,
        }
        with self._lock:
            self._recent.append(event)
            subscribers = list(self._subscribers)
        if self._loop is not None and subscribers:
            self._loop.call_soon_threadsafe(self._fan_out, subscribers, event)

    @staticmethod
    def _fan_out(subscribers: list[asyncio.Queue[dict[str, Any]]], event: dict[str, Any]) -> None:
        for queue in subscribers:
            if queue.qsize() < SUBSCRIBER_QUEUE:  # a stalled viewer loses events, not memory
                queue.put_nowait(event)

    def recent(self, limit: int) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._recent)[-limit:]

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        with self._lock:
            self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        with self._lock:
            self._subscribers.discard(queue)
