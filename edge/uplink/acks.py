"""PUBACKs from paho's network thread to the uplink's worker, handed over in batches.

Waking the worker for every acknowledgement costs a thread switch per message (and the GIL
going back and forth with paho's network thread, which is what sends the next message). The
worker says how many acknowledgements it waits for — half of what it has in flight, at most
``WAKE_BATCH`` — and is woken once that many arrived; with few in flight (the end of a
backlog, a live event) that is one, so nothing waits longer than before.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from paho.mqtt.reasoncodes import ReasonCode

WAKE_BATCH = 64  # acknowledgements that wake the worker when plenty are in flight

Ack = tuple[int, ReasonCode]  # (mid, reason code)


class AckInbox:
    """``add`` runs on paho's network thread (with the link process: the channel's reader
    thread); ``expect`` and ``take`` on the worker."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._acks: deque[Ack] = deque()
        self._wake = wake
        self._wake_after = 1
        self._woken = False

    def add(self, mid: int, code: ReasonCode) -> None:
        acks = self._acks
        acks.append((mid, code))
        if not self._woken and len(acks) >= self._wake_after:
            self._woken = True
            self._wake()

    def expect(self, in_flight: int) -> bool:
        """Before the worker waits: wake it after enough acknowledgements for ``in_flight``
        messages. True: that many are here already (do not wait)."""
        self._woken = False
        self._wake_after = max(1, min(WAKE_BATCH, in_flight // 2))
        return len(self._acks) >= self._wake_after

    def take(self) -> list[Ack]:
        """The acknowledgements received so far, oldest first."""
        acks = self._acks
        taken = []
        while acks:
            taken.append(acks.popleft())  # only this thread removes: never empty here
        return taken
