"""Many events from JSON lines (``moltbot event send --from-file``): one process, one open outbox.

Each line is ``{"kind": …, "payload": {…}, "qos": 0|1}``, or only the payload object when the
caller names the kind. A bad line is reported with its number and skipped; the lines around it
are queued. Blank lines and lines starting with ``#`` are ignored.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from edge.errors import MessageRejectedError, MoltbotError, OutboxFullError
from edge.outbox.store import AcceptedEvent, Outbox

logger = logging.getLogger(__name__)
MAX_LINE_CHARS = 1 << 20  # longer than any message the outbox accepts
BURST_EVENTS = 256  # lines stored per transaction when reading a file


@dataclass
class BatchReport:
    queued: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EventLine:
    kind: str
    payload: object
    qos: int


def parse_line(
    text: str, number: int, *, default_kind: str | None, default_qos: int
) -> EventLine | None:
    """One line → an event (None for blank and comment lines); ``MessageRejectedError`` else."""
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return None
    where = f"line {number}"
    if len(stripped) > MAX_LINE_CHARS:
        raise MessageRejectedError(
            f"line is {len(stripped)} characters long", where=where, hint="one event per line"
        )
    try:
        decoded: Any = json.loads(stripped)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise MessageRejectedError(
            f"not JSON: {exc}", where=where, hint="one JSON object per line"
        ) from exc
    if default_kind is not None:
        return EventLine(default_kind, decoded, default_qos)
    if not isinstance(decoded, dict) or not isinstance(decoded.get("kind"), str):
        raise MessageRejectedError(
            'a line must be an object with "kind" (and "payload", "qos")',
            where=where,
            hint='e.g. {"kind": "defect", "payload": {"line": 3}}, or give KIND on the command '
            "line and write only payloads",
        )
    unknown = set(decoded) - {"kind", "payload", "qos"}
    if unknown:
        raise MessageRejectedError(
            f"unknown field(s) {sorted(unknown)}", where=where, hint="kind, payload, qos"
        )
    qos = decoded.get("qos", default_qos)
    if qos not in (0, 1) or isinstance(qos, bool):
        raise MessageRejectedError(f"qos must be 0 or 1, got {qos!r}", where=where)
    return EventLine(decoded["kind"], decoded.get("payload", {}), qos)


def queue_lines(
    outbox: Outbox, lines: Iterable[str], *, default_kind: str | None, default_qos: int = 1
) -> BatchReport:
    """Queue every good line; stop only when the disk is full.

    From a file, good lines are stored in bursts of ``BURST_EVENTS`` (one transaction, one
    fsync each: :meth:`Outbox.put_many`); from a pipe (stdin), each line as soon as it is read,
    since the next one may be a long time coming.
    """
    report = BatchReport()
    burst = BURST_EVENTS if _seekable(lines) else 1
    pending: list[tuple[int, AcceptedEvent]] = []
    for number, text in enumerate(lines, start=1):
        try:
            event = parse_line(text, number, default_kind=default_kind, default_qos=default_qos)
            if event is None:
                continue
            pending.append((number, outbox.accept(event.kind, event.payload, qos=event.qos)))
        except MoltbotError as exc:
            where = exc.where if exc.where and exc.where.startswith("line ") else None
            report.problems.append(f"{where or f'line {number}'}: {exc.what}")
            continue
        if len(pending) >= burst:
            if not _store_burst(outbox, pending, report):
                return report
            pending = []
    if pending:
        _store_burst(outbox, pending, report)
    return report


def _seekable(lines: Iterable[str]) -> bool:
    seekable = getattr(lines, "seekable", None)  # a file object; a pipe says False
    return callable(seekable) and bool(seekable())


def _store_burst(
    outbox: Outbox, pending: list[tuple[int, AcceptedEvent]], report: BatchReport
) -> bool:
    """One transaction for the burst; if it fails, line by line, so that every line that fits
    is queued and the one that met the full disk is named. False: the disk is full, stop."""
    if len(pending) > 1:
        try:
            stored = outbox.put_many([event for _number, event in pending])
        except MoltbotError as exc:
            logger.warning(
                "a burst of %d events failed (%s); storing them one by one", len(pending), exc.what
            )
        else:
            for (number, event), message in zip(pending, stored, strict=True):
                _count(report, number, event, message)
            return True
    for number, event in pending:
        try:
            (message,) = outbox.put_many([event])
        except OutboxFullError as exc:
            report.problems.append(f"line {number}: {exc.what}")
            if "disk is full" in exc.what:
                report.problems.append(f"stopped at line {number}: the disk is full")
                return False
            continue
        except MoltbotError as exc:
            report.problems.append(f"line {number}: {exc.what}")
            continue
        _count(report, number, event, message)
    return True


def _count(report: BatchReport, number: int, event: AcceptedEvent, message: object) -> None:
    if message is None:
        report.problems.append(
            f"line {number}: the outbox is at its cap with messages of higher priority than "
            f"this {event.kind} message, which was dropped"
        )
    else:
        report.queued += 1
