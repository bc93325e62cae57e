"""An outbox on a test folder, as the outbox's unit tests open it, and its rows counted."""

from __future__ import annotations

from pathlib import Path

from edge.outbox import tally
from edge.outbox.store import Outbox
from tests.support.fake_clock import FakeClock

PRIORITIES = {"defect": 30, "voice": 20, "status": 10, "telemetry": 0}


def make_outbox(path: Path, clock: FakeClock | None = None, **options: object) -> Outbox:
    """An outbox in ``path`` with topics ``moltbot/site/dev/<kind>`` and :data:`PRIORITIES`;
    ``options``: the rest of :class:`Outbox`'s settings (cap, retention)."""
    return Outbox(
        path,
        topic_for=lambda kind: f"moltbot/site/dev/{kind}",
        clock=clock or FakeClock(),
        priorities=PRIORITIES,
        **options,  # type: ignore[arg-type]
    )


def counted_from_rows(outbox: Outbox) -> tally.Tally:
    """What the counters must say: every message row counted."""
    counted, _last = tally.count_rows(outbox._cache)
    return counted
