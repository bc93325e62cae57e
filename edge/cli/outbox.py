"""``moltbot outbox …`` and ``moltbot event send``: inspect, drain and feed the outbox."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, TextIO

import click

from edge import wiring

if TYPE_CHECKING:
    from edge.cli.context import CliState
    from edge.config import MoltbotConfig
    from edge.outbox.store import Outbox

NOMINAL_DRAIN_RATE = 500.0  # msg/s: the uplink benchmark's goal on loopback


def drain(config: MoltbotConfig, outbox: Outbox, timeout_s: float) -> bool:
    uplink = wiring.build_uplink(config, outbox)
    uplink.start()
    try:
        return uplink.wait_drained(timeout_s)
    finally:
        uplink.stop()
        if uplink.last_error:
            click.echo(f"uplink: {uplink.last_error}", err=True)


@click.group()
def outbox() -> None:
    """Inspect, drain or purge the store-and-forward outbox."""


@outbox.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--rate",
    type=float,
    default=NOMINAL_DRAIN_RATE,
    show_default=True,
    help="Messages per second assumed for the drain-time estimate.",
)
@click.pass_obj
def outbox_stats(state: CliState, as_json: bool, rate: float) -> None:
    """Depth, bytes, oldest age, delivered/expired/dropped totals, time to drain."""
    store = wiring.open_outbox(state.loaded().config)
    try:
        stats = store.stats()
    finally:
        store.close()
    report = asdict(stats) | {"estimated_drain_s": stats.estimated_drain_s(rate)}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    for key, value in report.items():
        click.echo(f"{key:<18} {value}")


@outbox.command("peek")
@click.argument("count", type=click.IntRange(min=1), default=10)
@click.pass_obj
def outbox_peek(state: CliState, count: int) -> None:
    """Print the COUNT oldest messages as JSON lines, without removing them."""
    store = wiring.open_outbox(state.loaded().config)
    try:
        for message in store.peek(count):
            line = message.to_json() | {"age_s": round(store.age_s(message), 3)}
            click.echo(json.dumps(line, ensure_ascii=False))
    finally:
        store.close()


@outbox.command("drain")
@click.option(
    "--once",
    is_flag=True,
    required=True,
    help="Connect, send the whole backlog, and exit (the service drains continuously).",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=300.0,
    show_default=True,
    help="Give up after this many seconds; what is not sent stays queued.",
)
@click.pass_obj
def outbox_drain(state: CliState, once: bool, timeout_s: float) -> int:
    """Send the queued messages to the broker now."""
    del once  # the only mode; the flag keeps the intent explicit on the command line
    config = state.loaded().config
    store = wiring.open_outbox(config)
    try:
        before = len(store)
        drained = drain(config, store, timeout_s)
        left = len(store)
    finally:
        store.close()
    click.echo(f"sent {before - left} message(s), {left} left in the outbox")
    return 0 if drained else 1


@outbox.command("purge")
@click.option(
    "--older-than",
    "hours",
    type=click.FloatRange(min=0),
    required=True,
    help="Remove messages older than this many hours.",
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def outbox_purge(state: CliState, hours: float, yes: bool) -> None:
    """Remove old messages without sending them (counted as dropped)."""
    store = wiring.open_outbox(state.loaded().config)
    try:
        if not yes:
            click.confirm(
                f"Delete every queued message older than {hours} h? They will never be sent",
                abort=True,
            )
        removed = store.purge_older_than(hours)
    finally:
        store.close()
    click.echo(f"purged {removed} message(s)")


@click.group()
def event() -> None:
    """Queue events as the runtime does."""


@event.command("send")
@click.argument("kind", required=False)
@click.option("--payload", default="{}", show_default=True, help="The event's data, a JSON object.")
@click.option(
    "--from-file",
    "from_file",
    type=click.File("r", encoding="utf-8", lazy=False),
    help="Queue one event per line of this file ('-': standard input), as JSON: "
    '{"kind": "defect", "payload": {…}, "qos": 1}, or just the payload when KIND is given. '
    "Lines are queued as they arrive, so a script can keep one process open.",
)
@click.option("--qos", type=click.Choice(["0", "1"]), default="1", show_default=True)
@click.option("--deliver", is_flag=True, help="Also send the outbox to the broker now.")
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=30.0,
    show_default=True,
    help="With --deliver: seconds to wait for the broker.",
)
@click.pass_obj
def event_send(
    state: CliState,
    kind: str | None,
    payload: str,
    from_file: TextIO | None,
    qos: str,
    deliver: bool,
    timeout_s: float,
) -> int:
    """Queue a KIND event (defect, voice, status, telemetry, …), e.g. to commission a device.

    With --from-file, queue many from JSON lines: one process for a whole shift of parts.
    Exit 2 when a line was refused (each says why, with its line number; the others are queued).
    """
    from edge.errors import MessageRejectedError  # noqa: PLC0415
    from edge.outbox.batch import queue_lines  # noqa: PLC0415

    if from_file is None and kind is None:
        raise MessageRejectedError(
            "no event to send", where="KIND", hint="give KIND, or --from-file FILE (or -)"
        )
    if from_file is None:
        data = _payload_object(payload)
    config = state.loaded().config
    store = wiring.open_outbox(config)
    status = 0
    try:
        if from_file is None:
            assert kind is not None  # noqa: S101 - checked above
            message = store.put(kind, data, qos=int(qos))
            click.echo(f"queued {message.kind} event {message.id} for {message.topic}")
        else:
            report = queue_lines(store, from_file, default_kind=kind, default_qos=int(qos))
            for problem in report.problems:
                click.echo(f"error: {problem}", err=True)
            click.echo(f"queued {report.queued} event(s), {len(report.problems)} refused")
            status = 2 if report.problems else 0
        if deliver:
            delivered = drain(config, store, timeout_s)
            click.echo("delivered" if delivered else "not delivered yet: it stays queued")
            status = status or (0 if delivered else 1)
    finally:
        store.close()
    return status


def _payload_object(payload: str) -> object:
    from edge.errors import MessageRejectedError  # noqa: PLC0415

    try:
        return json.loads(payload)
    except json.JSONDecodeError as exc:
        raise MessageRejectedError(
            f"--payload is not JSON: {exc}",
            where="--payload",
            hint="quote it for the shell: --payload '{\"line\": 3}'",
        ) from exc
