"""Syncing the outbox to the broker: one worker thread, one connection at a time.

States: ``connecting`` → ``connected`` → (lost) → ``backing_off`` → ``connecting`` …; a broker
that refuses us (bad credentials, rejected certificate) is ``refused`` and is retried at the
longest backoff, the reason logged once. Every connection uses a fresh paho client with a clean
session: the outbox, not paho, is the one record of what is still owed.

Delivery: oldest first with a window of ``inflight_window`` QoS 1 messages; a message leaves
the outbox only on its PUBACK (deletes are batched into one transaction). After a reconnect the
backlog restarts from the oldest unacknowledged message, so consumers may see a message twice,
always with the same ``id``.

Sharing the link: events accepted while connected take the **live lane**; ``live_share`` of
the window is reserved for it, so a new defect event overtakes a 72-hour backlog instead of
queueing behind it. The backlog itself stays in acceptance order.
"""

from __future__ import annotations

import logging
import math
import queue
import random
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from edge.config.model import UplinkSettings
from edge.errors import MoltbotError, OutboxError
from edge.outbox.message import OutboxMessage
from edge.outbox.store import Outbox
from edge.text_enum import TextEnum
from edge.uplink.acks import AckInbox
from edge.uplink.commands import CommandRouter
from edge.uplink.connection import build_settings_client
from edge.uplink.dialect import Dialect, JsonDialect, Stamped
from edge.uplink.link_client import FirstPublisher, LinkClient
from edge.uplink.remote_client import LinkProcess, LinkProcessError
from edge.uplink.topics import TopicScheme

logger = logging.getLogger(__name__)

ACK_BATCH = 512  # acknowledged messages deleted per transaction, at most
ACK_FLUSH_S = 0.05  # ... or after this long
IDLE_POLL_S = 0.2  # how often an idle link looks for messages put by other processes
PREFETCH_MESSAGES = 256  # backlog read per query, ahead of the window
DRAINED_POLL_S = 0.02
# Backlog messages handed to the MQTT client beyond the in-flight window: with the link process
# (a ``FirstPublisher``: live events go ahead of them) enough to bridge the round trip of its
# acknowledgements to this process; with paho in-process, whose queue is first in first out,
# fewer, as a live event waits behind them.
HANDED_AHEAD = 1024
HANDED_AHEAD_IN_PROCESS = 256
LIVE_LANE_MAX = 10_000  # beyond this, new events wait in the backlog like the rest


class LinkState(TextEnum):
    STOPPED = "stopped"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    WAITING_FOR_HOST = "waiting_for_host"  # Sparkplug: connected, the primary host is offline
    BACKING_OFF = "backing_off"
    REFUSED = "refused"


@dataclass
class UplinkCounters:
    published_total: int = 0
    acked_total: int = 0
    rejected_total: int = 0
    connects_total: int = 0
    failed_connects_total: int = 0
    expired_at_send_total: int = 0


ClientFactory = Callable[[UplinkSettings, str], LinkClient]


def backoff_delay(attempt: int, low_s: float, high_s: float, rng: random.Random) -> float:
    """Exponential backoff with jitter: a random delay in [half, all] of min(high, low·2^n)."""
    ceiling = min(high_s, low_s * (2 ** min(attempt, 30)))
    return rng.uniform(ceiling / 2, ceiling)


class Uplink:
    """Owns the MQTT connection and moves the outbox to the broker."""

    def __init__(
        self,
        outbox: Outbox,
        settings: UplinkSettings,
        topics: TopicScheme,
        *,
        client_factory: ClientFactory | None = None,
        rng: random.Random | None = None,
        sweep_interval_s: float = 60.0,
        dialect: Dialect | None = None,
    ) -> None:
        self.outbox = outbox
        self.settings = settings
        self.topics = topics
        self.dialect = dialect or JsonDialect(topics, mqtt_v5=settings.protocol == "5")
        self.commands = CommandRouter(outbox)
        self.counters = UplinkCounters()
        self.state = LinkState.STOPPED
        self.last_error: str | None = None
        # The MQTT client runs in the link process unless settings or the caller say otherwise.
        self._link = LinkProcess() if client_factory is None and settings.link_process else None
        if client_factory is None:
            client_factory = self._link.client if self._link is not None else build_settings_client
        self._client_factory = client_factory
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._sweep_interval_s = sweep_interval_s
        self._events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._acks = AckInbox(lambda: self._events.put(("acks",)))
        self._live: deque[OutboxMessage] = deque()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported_refusal: str | None = None
        reserved = math.ceil(settings.inflight_window * settings.live_share)
        self._backlog_window = max(1, settings.inflight_window - reserved)
        outbox.add_listener(self._on_accepted)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Say ``offline``, flush acknowledgements, disconnect; nothing stored is lost."""
        self._stop.set()
        self._events.put(("wake",))
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.error("the uplink did not stop within %.0f s", timeout_s)
            self._thread = None
        if self._link is not None:
            self._link.close()
        self.state = LinkState.STOPPED

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def wait_drained(self, timeout_s: float) -> bool:
        """True once the outbox is empty (everything acknowledged and deleted)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if len(self.outbox) == 0:
                return True
            time.sleep(DRAINED_POLL_S)
        return len(self.outbox) == 0

    @property
    def link_process_pid(self) -> int | None:
        """The link process's id while it runs (``uplink.link_process``), else None."""
        return self._link.pid if self._link is not None else None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _on_accepted(self, message: OutboxMessage) -> None:
        if self._connected.is_set() and len(self._live) < LIVE_LANE_MAX:
            self._live.append(message)
            self._events.put(("wake",))

    # -- the worker -------------------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            self.state = LinkState.CONNECTING
            try:
                client = self._connect()
                if client is not None:
                    attempt = 0
                    self._serve(client)
            except Exception as exc:  # a fault of ours must not end syncing for good
                logger.exception("the uplink failed; it reconnects after a pause")
                self.last_error = f"uplink failure: {exc!r}"
            if self._stop.is_set():
                break
            if self.state != LinkState.REFUSED:
                self.state = LinkState.BACKING_OFF
            refused = self.state == LinkState.REFUSED
            delay = backoff_delay(
                30 if refused else attempt,
                self.settings.reconnect_min_s,
                self.settings.reconnect_max_s,
                self._rng,
            )
            attempt += 1
            logger.debug("reconnecting in %.1f s", delay)
            self._stop.wait(delay)
        self.state = LinkState.STOPPED

    def _serve(self, client: LinkClient) -> None:
        try:
            _Session(self, client).run()
        finally:
            self._connected.clear()
            self._live.clear()
            client.disconnect()
            client.loop_stop()

    def _connect(self) -> LinkClient | None:
        settings = self.settings
        address = f"{settings.host}:{settings.port}"
        self._drain_events()
        try:
            client = self._client_factory(settings, self.topics.device)
        except LinkProcessError as exc:  # not the broker's answer: try again soon
            self._unreachable(f"the MQTT link process failed: {exc.what}")
            return None
        except MoltbotError as exc:
            self._refusal(f"cannot set up the MQTT client: {exc}")
            return None
        client.max_inflight_messages_set(settings.inflight_window)
        client.max_queued_messages_set(0)
        self.dialect.will(client)
        client.on_connect = self._cb_connect
        client.on_disconnect = self._cb_disconnect
        client.on_publish = self._cb_publish
        client.on_message = self._cb_message
        try:
            client.connect(settings.host, settings.port, keepalive=settings.keepalive_s)
        except ssl.SSLError as exc:
            self._refusal(
                f"TLS handshake with {address} failed: {exc.reason or exc}; check "
                "uplink.tls.ca_file (does it sign the broker's certificate?) and the client "
                "certificate"
            )
            return None
        except OSError as exc:
            self._unreachable(f"cannot reach the broker at {address}: {exc}")
            return None
        client.loop_start()
        kind, details = self._await_connack(settings.connect_timeout_s)
        if kind == "connack" and not details[0].is_failure:
            self.state = LinkState.CONNECTED
            self.counters.connects_total += 1
            self._reported_refusal = None
            self.last_error = None
            return client
        client.loop_stop()
        client.disconnect()
        if kind == "connack":
            code: ReasonCode = details[0]
            self._refusal(
                f"the broker at {address} refused the connection: {code} "
                f"(reason code {code.value}); check uplink.username/password and "
                "the broker's ACL"
            )
        elif kind == "disconnect":
            self._unreachable(f"the broker at {address} closed the connection during CONNECT")
        else:
            self._unreachable(f"no CONNACK from {address} within {settings.connect_timeout_s} s")
        return None

    def _await_connack(self, timeout_s: float) -> tuple[str, list[Any]]:
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                kind, *details = self._events.get(timeout=left)
            except queue.Empty:
                break
            if kind in ("connack", "disconnect"):
                return kind, details
        return "timeout", []

    def _refusal(self, reason: str) -> None:
        self.counters.failed_connects_total += 1
        self.state = LinkState.REFUSED
        self.last_error = reason
        if reason != self._reported_refusal:
            logger.error("%s; events stay queued in the outbox", reason)
            self._reported_refusal = reason

    def _unreachable(self, reason: str) -> None:
        self.counters.failed_connects_total += 1
        self.state = LinkState.BACKING_OFF
        if reason != self.last_error:
            logger.warning("%s; events stay queued in the outbox", reason)
        self.last_error = reason

    def _drain_events(self) -> None:
        self._acks.take()  # a previous connection's: their mids mean nothing now
        while True:
            try:
                self._events.get_nowait()
            except queue.Empty:
                return

    # -- paho callbacks: they only hand events to the worker --------------------------------

    def _cb_connect(self, _c: object, _u: object, _f: object, code: ReasonCode, _p: object) -> None:
        self._events.put(("connack", code))

    def _cb_disconnect(
        self, _c: object, _u: object, _f: object, code: ReasonCode, _p: object
    ) -> None:
        self._events.put(("disconnect", code))

    def _cb_publish(self, _c: object, _u: object, mid: int, code: ReasonCode, _p: object) -> None:
        self._acks.add(mid, code)

    def _cb_message(self, _c: object, _u: object, message: mqtt.MQTTMessage) -> None:
        self._events.put(("message", message.topic, bytes(message.payload)))


class _Session:
    """One connected session: fills the window, handles acks, commands and the sweep."""

    def __init__(self, uplink: Uplink, client: LinkClient) -> None:
        self.uplink = uplink
        self.client = client
        self.outbox = uplink.outbox
        # The client keeps at most ``inflight_window`` unacknowledged; up to ``ahead`` more wait
        # in its queue, so each PUBACK sends the next message from the client's own loop
        # at once instead of after a round trip through this thread (the window stays full,
        # and this thread handles acknowledgements in batches). A live event goes ahead of
        # them where the client can do that (the link process); with paho in this process it
        # waits behind them (and so it does where the dialect numbers messages in sending
        # order: Sparkplug): milliseconds at the drain's rate.
        lanes = client if isinstance(client, FirstPublisher) else None
        self._lanes = lanes
        self._first_lane = lanes if uplink.dialect.live_may_overtake else None
        ahead = HANDED_AHEAD if self._first_lane is not None else HANDED_AHEAD_IN_PROCESS
        self.mqtt_window = uplink.settings.inflight_window
        self.window = self.mqtt_window + ahead
        self.backlog_window = uplink._backlog_window + ahead
        self.dialect = uplink.dialect
        self.inflight: dict[int, tuple[OutboxMessage, bool]] = {}  # mid → (message, is_live)
        self.backlog_inflight = 0
        self.live_sent: set[int] = set()
        self.cursor = 0  # the next backlog sequence number to publish
        self.prefetched: deque[OutboxMessage] = deque()  # read ahead, not yet published
        self.read_after = 0  # the last sequence number read into ``prefetched``
        self.acked: list[OutboxMessage] = []
        self.first_ack_at = 0.0
        self.next_sweep = time.monotonic()
        self.alive = True

    def run(self) -> None:
        uplink = self.uplink
        self.dialect.begin(self.client)
        logger.info(
            "connected to %s:%d as %s",
            uplink.settings.host,
            uplink.settings.port,
            uplink.topics.device,
        )
        try:
            while self.alive and not uplink._stop.is_set():
                self._follow_readiness()
                self._fill_window()
                self.dialect.tick(self.client)
                self._handle_events(self._wait_s())
                self._flush_acks(force=False)
                self._sweep()
            if uplink._stop.is_set() and self.alive:
                self._say_offline()
        finally:
            self._flush_acks(force=True)

    def _follow_readiness(self) -> None:
        """Data flows only while the dialect is ready (Sparkplug: born, primary host online)."""
        uplink = self.uplink
        if self.dialect.ready():
            uplink.state = LinkState.CONNECTED
            uplink._connected.set()
        else:
            uplink.state = LinkState.WAITING_FOR_HOST
            uplink._connected.clear()

    def _wait_s(self) -> float:
        if self.acked:
            return ACK_FLUSH_S
        return IDLE_POLL_S

    def _handle_events(self, wait_s: float) -> None:
        """Wait up to ``wait_s`` for an event or enough acknowledgements, then handle all that
        arrived (acknowledgements first: paho reported them before any later event)."""
        events = self.uplink._events
        try:
            if self.uplink._acks.expect(len(self.inflight)):
                event = events.get_nowait()
            else:
                event = events.get(timeout=wait_s)
        except queue.Empty:
            event = None
        while True:
            for mid, code in self.uplink._acks.take():
                self._on_puback(mid, code)
            if event is None:
                return
            self._handle(event)
            try:
                event = events.get_nowait()
            except queue.Empty:
                event = None

    def _handle(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "disconnect":
            logger.warning("lost the broker connection: %s; resuming after reconnect", event[1])
            self.uplink.last_error = f"disconnected: {event[1]}"
            self.alive = False
        elif kind == "message":
            reaction = self.dialect.on_message(self.client, event[1], event[2])
            for name, payload in reaction.commands:
                self.uplink.commands.handle(name, payload)
            if reaction.end_session:
                self.uplink.last_error = "the session was ended on request"
                self._end_session()

    def _on_puback(self, mid: int, code: ReasonCode) -> None:
        entry = self.inflight.pop(mid, None)
        if entry is None:
            return  # the availability message, or a late ack
        message, is_live = entry
        if not is_live:
            self.backlog_inflight -= 1
        if code.is_failure:
            self.uplink.counters.rejected_total += 1
            logger.error(
                "the broker rejected message %s on %s: %s; it stays in the outbox",
                message.id,
                message.topic,
                code,
            )
            return
        self.uplink.counters.acked_total += 1
        if not self.acked:
            self.first_ack_at = time.monotonic()
        self.acked.append(message)

    def _flush_acks(self, *, force: bool) -> None:
        if not self.acked:
            return
        due = time.monotonic() - self.first_ack_at >= ACK_FLUSH_S
        if force or due or len(self.acked) >= ACK_BATCH:
            try:
                self.outbox.remove_delivered(self.acked)
            except OutboxError as exc:
                self.first_ack_at = time.monotonic()  # retry after the next flush interval
                if str(exc) != self.uplink.last_error:
                    logger.error("%s", exc)
                self.uplink.last_error = str(exc)
                return
            self.acked = []

    def _end_session(self) -> None:
        self.alive = False
        self._flush_acks(force=True)
        self.client.disconnect()

    def _fill_window(self) -> None:
        if not self.dialect.ready():
            return
        live = self.uplink._live
        while self.alive and live and len(self.inflight) < self.window:
            message = live.popleft()
            if message.seq >= self.cursor and message.seq not in self.live_sent:
                self.live_sent.add(message.seq)
                self._publish(message, is_live=True)
        while (
            self.alive
            and self.backlog_inflight < self.backlog_window
            and (len(self.inflight) < self.window)
        ):
            room = min(
                self.backlog_window - self.backlog_inflight,
                self.window - len(self.inflight),
            )
            if not self._prefetch():
                return
            for _ in range(min(room, len(self.prefetched))):
                if self._lost():  # a failed publish ends the session mid-batch
                    return
                message = self.prefetched.popleft()
                self.cursor = message.seq + 1
                if message.seq in self.live_sent:
                    self.live_sent.discard(message.seq)
                    continue
                self._publish(message, is_live=False)

    def _prefetch(self) -> bool:
        """Keep a page of the backlog read ahead (one query per page); False: none is left."""
        if not self.prefetched:
            page = self.outbox.page(max(self.read_after, self.cursor - 1), PREFETCH_MESSAGES)
            if page:
                self.read_after = page[-1].seq
            self.prefetched.extend(page)
        return bool(self.prefetched)

    def _lost(self) -> bool:
        return not self.alive

    def _publish(self, message: OutboxMessage, *, is_live: bool) -> None:
        remaining_s = self.outbox.remaining_s(message)
        if remaining_s <= 0:
            self.uplink.counters.expired_at_send_total += 1
            self.outbox.remove_expired([message])
            return
        created_at, time_source = self.outbox.created_at(message)
        out = self.dialect.encode(
            self.client, Stamped(message, created_at, time_source, remaining_s)
        )
        first_lane = self._first_lane if is_live else None
        if first_lane is not None:  # ahead of the backlog handed over already
            info = first_lane.publish(
                out.topic, out.payload, qos=out.qos, properties=out.properties, first=True
            )
        else:
            info = self.client.publish(
                out.topic, out.payload, qos=out.qos, properties=out.properties
            )
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            logger.warning(
                "publish failed (%s); resuming after reconnect", mqtt.error_string(info.rc)
            )
            self.alive = False
            return
        self.uplink.counters.published_total += 1
        self.inflight[info.mid] = (message, is_live)
        if not is_live:
            self.backlog_inflight += 1

    def _sweep(self) -> None:
        if time.monotonic() >= self.next_sweep:
            self.next_sweep = time.monotonic() + self.uplink._sweep_interval_s
            self.outbox.expire()

    def _say_offline(self) -> None:
        if self._lanes is not None:
            self._lanes.forget_waiting()  # unsent, still in the outbox: nothing after goodbye
        info = self.dialect.goodbye(self.client)
        deadline = time.monotonic() + 2.0
        while not info.is_published() and time.monotonic() < deadline:
            self._handle_events(0.05)
        self.client.disconnect()
