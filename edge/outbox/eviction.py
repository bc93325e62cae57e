"""Which messages go when the outbox reaches its cap: a pure decision, tested without I/O."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class StoredEntry:
    seq: int
    priority: int
    size: int


def choose_victims(
    entries: Iterable[StoredEntry], need_bytes: int, incoming_priority: int
) -> list[StoredEntry] | None:
    """Lowest priority first, oldest first within a priority, until ``need_bytes`` are freed.

    Only messages of a priority at or below the incoming one may go; if they do not free
    enough, the answer is ``None``: the incoming message is the one to drop.
    ``entries`` are in acceptance (age) order.
    """
    by_priority: dict[int, list[StoredEntry]] = {}
    for entry in entries:
        if entry.priority <= incoming_priority:
            by_priority.setdefault(entry.priority, []).append(entry)
    victims: list[StoredEntry] = []
    freed = 0
    for priority in sorted(by_priority):
        for entry in by_priority[priority]:
            if freed >= need_bytes:
                return victims
            victims.append(entry)
            freed += entry.size
    return victims if freed >= need_bytes else None
