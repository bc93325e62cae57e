"""The link process's in-flight window: at most ``limit`` QoS 1/2 publishes unacknowledged,
the rest waiting in order.

paho keeps such a window itself (``max_inflight_messages_set``), but on every PUBACK it walks
its table of outgoing messages from the start to find the next one queued: with a window of 64
that is some 65 steps for each message acknowledged, a fifth of the link process's time in a
drain. Here the window is a counter and a FIFO queue, so paho's own limit is off (0) and
nothing in it is ever queued: each acknowledgement lets the oldest waiting publish go, in O(1).
The behaviour is paho's: the same limit (0 = none), order kept, QoS 0 never waits, and
``max_queued`` (0 = no limit) counts what is in flight and what waits, as paho does. One thing
paho does not do is done here: an MQTT 5 broker's *Receive Maximum* (in its CONNACK) caps the
window, as the specification requires of a client ([MQTT-3.3.4-7]); a broker that enforces it
disconnects a client that sends more (reason code 0x93). And publishes marked *first* (the
live lane's) wait in a queue of their own that goes before the others: a defect event is not
held behind the backlog already handed over.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple


class WaitingPublish(NamedTuple):
    """A publish the appliance sent that waits for room in the window, in the order of
    ``LinkServer._send``'s arguments."""

    ident: int  # the appliance's id for it
    topic: str
    payload: bytes
    qos: int
    retain: bool
    packed_properties: bytes | None


class PublishWindow:
    """Counts QoS > 0 publishes in flight and holds the ones that wait for room."""

    def __init__(self, limit: int, max_queued: int = 0) -> None:
        self.limit = limit  # what the client was set to; 0: no limit
        self.max_queued = max_queued  # 0: no limit
        self.broker_limit = 0  # the broker's Receive Maximum; 0: it named none
        self.in_flight = 0
        self._waiting: deque[WaitingPublish] = deque()
        self._first: deque[WaitingPublish] = deque()  # waiting, ahead of ``_waiting``

    @property
    def effective_limit(self) -> int:
        """The smaller of the client's limit and the broker's (0: neither limits)."""
        limits = [limit for limit in (self.limit, self.broker_limit) if limit > 0]
        return min(limits) if limits else 0

    def set_limit(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("the in-flight window must be 0 (no limit) or more")
        self.limit = limit

    def set_broker_limit(self, receive_maximum: int) -> None:
        """The broker's Receive Maximum (1–65535) from its CONNACK; 0 when it named none."""
        if receive_maximum < 0:
            raise ValueError("a Receive Maximum is 1 to 65535 (0: none named)")
        self.broker_limit = receive_maximum

    def set_max_queued(self, max_queued: int) -> None:
        if max_queued < 0:
            raise ValueError("the queue size must be 0 (no limit) or more")
        self.max_queued = max_queued

    def is_full_for(self, qos: int, *, first: bool = False) -> bool:
        """Whether a new publish of ``qos`` must wait (QoS 0 never does). Nothing overtakes
        what waits in its own queue; a *first* one overtakes the others."""
        if qos == 0:
            return False
        if first:
            return bool(self._first) or self._full()
        return bool(self._first or self._waiting) or self._full()

    def _full(self) -> bool:
        limit = self.effective_limit
        return 0 < limit <= self.in_flight

    def has_room_to_queue(self) -> bool:
        """Whether one more may be taken at all (paho's ``max_queued_messages``)."""
        return self.max_queued == 0 or self.in_flight + self.waiting() < self.max_queued

    def wait(self, publish: WaitingPublish, *, first: bool = False) -> None:
        (self._first if first else self._waiting).append(publish)

    def sent(self) -> None:
        """A QoS > 0 publish goes to paho now: it holds a place in the window."""
        self.in_flight += 1

    def acknowledged(self) -> None:
        """A QoS > 0 publish was acknowledged, or its send failed: its place is free."""
        if self.in_flight > 0:
            self.in_flight -= 1

    def next_ready(self) -> WaitingPublish | None:
        """The oldest waiting publish, if the window has room for it now; the place is
        taken (``sent``) for it."""
        if self._full():
            return None
        for queue in (self._first, self._waiting):
            if queue:
                self.in_flight += 1
                return queue.popleft()
        return None

    def waiting(self) -> int:
        return len(self._first) + len(self._waiting)

    def drop_waiting(self) -> list[WaitingPublish]:
        """Forget what waits (it was never sent); what is in flight stays counted."""
        dropped = [*self._first, *self._waiting]
        self._first.clear()
        self._waiting.clear()
        return dropped

    def clear(self) -> list[WaitingPublish]:
        """Forget everything (the client is gone); what waited, for the record."""
        self.in_flight = 0
        return self.drop_waiting()
