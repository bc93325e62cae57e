"""The MQTT link process: the paho client, out of the appliance's process.

A QoS 1 drain spends most of its CPU in paho (building packets, reading PUBACKs, its
bookkeeping), and in one Python process that work and the outbox's (reading pages, framing,
deleting) take turns on one interpreter lock: one core, however many the board has. Here the
paho client runs in a process of its own, started by ``remote_client.LinkProcess`` as
``python -m edge.uplink.link_process FD``; the appliance talks to it over the socket pair FD
with ordered batches (``link_channel``). :class:`LinkServer` runs paho's loop itself, so the
uplink's ``loop_start`` and ``loop_stop`` stay on the appliance's side. It holds nothing
durable: a message leaves the outbox only when its PUBACK has come back to the appliance, so
losing this process (killed, crashed) costs a reconnect and a resend with the same ``id``,
never a message.

Commands (appliance → here), each a tuple: ``(BUILD, request, client_options, client_id)``,
``(CONNECT, request, host, port, keepalive)`` (both answered ``(ANSWER, request, error|None)``),
``(CALL, name, args)`` for the client's other methods, ``(PUBLISH, id, topic, payload, qos,
retain, packed_properties, first)`` (``first``: ahead of what waits for the
in-flight window, the live lane's). Events (here → appliance): ``ANSWER``,
``(CONNACK, code, packet_type)``, ``(DISCONNECTED, code, packet_type)``, ``(ACK, id, code)``,
``(MESSAGE, topic, payload)``, ``(PUBLISH_FAILED, id, rc)``.
"""

from __future__ import annotations

import contextlib
import logging
import select
import selectors
import signal
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from edge.errors import MoltbotError
from edge.uplink.connection import ClientOptions, build_client
from edge.uplink.dialect import PackedPublishProperties
from edge.uplink.link_window import PublishWindow, WaitingPublish

logger = logging.getLogger(__name__)

BUILD = "build"
CONNECT = "connect"
CALL = "call"
PUBLISH = "publish"
ANSWER = "answer"
CONNACK = "connack"
DISCONNECTED = "disconnected"
ACK = "ack"
MESSAGE = "message"
PUBLISH_FAILED = "publish_failed"
MISC_INTERVAL_S = 1.0  # how often paho's keepalive bookkeeping runs
ACKS_PER_SEND = 64  # PUBACKs that go back to the appliance together ...
ACK_DELAY_S = 0.002  # ... or after this long; every other event goes back at once
FLUSH_S = 2.0  # how long a dropped client may still write what it holds (its DISCONNECT)

# The client methods a CALL may name (nothing else is reachable through the channel).
CALLABLE = frozenset(
    {
        "will_set",
        "max_inflight_messages_set",
        "max_queued_messages_set",
        "subscribe",
        "disconnect",
    }
)


class LinkServer:
    """Runs the appliance's commands on one paho client at a time, in one thread.

    paho's external-loop interface (``loop_read``, ``loop_write``, ``loop_misc``) on a
    selector shared with the channel: no network thread, so no interpreter lock to hand back
    and forth. The in-flight window is kept here (``link_window``), not by paho. What a round
    of the loop queued (the publishes of a batch, the next ones the PUBACKs let go) is written
    at its end, back to back, so that the kernel sends few segments; PUBACKs go back to the
    appliance in batches (``ACKS_PER_SEND`` or ``ACK_DELAY_S``), any other event at once.
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.client: mqtt.Client | None = None
        self._events: list[tuple[Any, ...]] = []
        self._urgent = False  # an event other than an ACK is waiting
        self._first_event_at = 0.0
        self._ids: dict[int, int] = {}  # paho's mid → the appliance's id, QoS 1 and 2
        self._ids_qos0: dict[int, int] = {}  # the same for QoS 0 (paho reports them written)
        self._window = PublishWindow(0)
        self._selector = selectors.DefaultSelector()
        self._watched: Any = None  # the client socket the selector watches
        self._watched_mask = 0

    @property
    def window(self) -> PublishWindow:
        """The current client's in-flight window (what is in flight, what waits)."""
        return self._window

    def serve(self) -> None:
        self._selector.register(self.connection, selectors.EVENT_READ, None)
        next_misc = time.monotonic()
        try:
            while True:
                client = self.client
                pending = self._watch(client)
                timeout = self._timeout_s(pending)
                for key, mask in self._selector.select(timeout):
                    if key.data is None:
                        if not self._read_commands():
                            return  # the appliance closed the channel, or is gone
                    elif client is not None and client is self.client:
                        if mask & selectors.EVENT_READ:
                            client.loop_read()
                        if mask & selectors.EVENT_WRITE and client.socket() is not None:
                            client.loop_write()
                if pending and client is not None and client is self.client:
                    client.loop_read()  # TLS: bytes already inside the SSL object
                self._end_round()
                now = time.monotonic()
                if self.client is not None and now >= next_misc:
                    self.client.loop_misc()  # keepalive: PINGREQ, and a broker gone silent
                    next_misc = now + MISC_INTERVAL_S
                if self._events_due(now):
                    self._send_events()
        finally:
            self._drop_client()
            self._send_events()

    def _end_round(self) -> None:
        """Send what the PUBACKs of this round made room for, then write all that this round
        queued, back to back."""
        client = self.client
        if client is None:
            return
        if self._window.waiting() and client.socket() is not None:
            self._release_waiting(client)  # (not on a lost connection: the client is dropped)
        if client.want_write():
            client.loop_write()

    def _timeout_s(self, pending: int) -> float:
        if pending or self._urgent:
            return 0.0
        if self._events:
            return max(0.0, self._first_event_at + ACK_DELAY_S - time.monotonic())
        return MISC_INTERVAL_S

    def _events_due(self, now: float) -> bool:
        return bool(self._events) and (
            self._urgent
            or len(self._events) >= ACKS_PER_SEND
            or now - self._first_event_at >= ACK_DELAY_S
        )

    def _event(self, event: tuple[Any, ...], *, urgent: bool = True) -> None:
        if not self._events:
            self._first_event_at = time.monotonic()
        self._events.append(event)
        self._urgent = self._urgent or urgent

    def _watch(self, client: mqtt.Client | None) -> int:
        """Keep the selector on the client's socket (it changes with each connection); the
        bytes TLS has decrypted already (select cannot see those)."""
        sock = client.socket() if client is not None else None
        mask = selectors.EVENT_READ
        if client is not None and client.want_write():
            mask |= selectors.EVENT_WRITE
        if sock is not self._watched or (sock is not None and sock.fileno() < 0):
            if self._watched is not None:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.unregister(self._watched)
            self._watched = None
            if sock is not None and sock.fileno() >= 0:
                self._selector.register(sock, mask, "mqtt")
                self._watched, self._watched_mask = sock, mask
        elif sock is not None and mask != self._watched_mask:
            self._selector.modify(sock, mask, "mqtt")
            self._watched_mask = mask
        pending = getattr(sock, "pending", None)
        return int(pending()) if pending is not None else 0

    def _read_commands(self) -> bool:
        try:
            batch = self.connection.recv()
        except (EOFError, OSError):
            return False
        for command in batch:
            self._handle(command)
        return True

    def _send_events(self) -> None:
        if not self._events:
            return
        events, self._events = self._events, []
        self._urgent = False
        with contextlib.suppress(OSError, ValueError):  # the appliance is gone: we end next
            self.connection.send(events)

    def _handle(self, command: tuple[Any, ...]) -> None:
        kind = command[0]
        if kind == PUBLISH:
            self._publish(*command[1:])
        elif kind == CALL:
            self._call(command[1], command[2])
        elif kind == BUILD:
            self._answer(command[1], self._build, command[2], command[3])
        elif kind == CONNECT:
            self._answer(command[1], self._connect, *command[2:])
        else:
            logger.error("the link process got an unknown command %r", kind)

    def _answer(self, request: int, action: Any, *args: Any) -> None:
        try:
            action(*args)
        except (MoltbotError, OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            self._event((ANSWER, request, exc))
            return
        self._event((ANSWER, request, None))

    def _build(self, options: ClientOptions, client_id: str) -> None:
        self._drop_client()
        client = build_client(options, client_id)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        # With a write callback set, paho queues what it sends and this loop writes it once a
        # round (``want_write``), back to back, instead of a system call inside every publish
        # and every PUBACK handled.
        client.on_socket_register_write = self._on_register_write
        # The window paho was built with is kept here; paho's own is off (0): see link_window.
        self._window = PublishWindow(client.max_inflight_messages, client.max_queued_messages)
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        self.client = client

    def _connect(self, host: str, port: int, keepalive: int) -> None:
        if self.client is None:
            raise ConnectionError("no MQTT client was set up in the link process")
        self.client.connect(host, port, keepalive=keepalive)

    def _call(self, name: str, args: tuple[Any, ...]) -> None:
        if name == "forget_waiting":  # the appliance says goodbye next: nothing after it
            self._window.drop_waiting()
            return
        if self.client is None or name not in CALLABLE:
            return
        try:
            getattr(self.client, name)(*args)
            if name == "max_inflight_messages_set":  # paho took it: it is the window's now
                self._window.set_limit(args[0])
                self.client.max_inflight_messages_set(0)
            elif name == "max_queued_messages_set":
                self._window.set_max_queued(args[0])
                self.client.max_queued_messages_set(0)
        except (OSError, ValueError, RuntimeError) as exc:
            logger.warning("MQTT client %s failed in the link process: %s", name, exc)

    def _publish(
        self,
        ident: int,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        packed: bytes | None,
        first: bool = False,
    ) -> None:
        if self.client is None:
            self._event((PUBLISH_FAILED, ident, int(mqtt.MQTT_ERR_NO_CONN)))
            return
        window = self._window
        if qos and not window.has_room_to_queue():  # paho's max_queued counts QoS > 0 only
            self._event((PUBLISH_FAILED, ident, int(mqtt.MQTT_ERR_QUEUE_SIZE)))
        elif window.is_full_for(qos, first=first):
            window.wait(WaitingPublish(ident, topic, payload, qos, retain, packed), first=first)
        else:
            if qos:
                window.sent()
            self._send(self.client, ident, topic, payload, qos, retain, packed)

    def _release_waiting(self, client: mqtt.Client) -> None:
        """Send what waited, as far as the window has room (``next_ready`` takes the place);
        after a failed one the rest stay (the appliance hears of the failure and reconnects)."""
        while (ready := self._window.next_ready()) is not None:
            if not self._send(client, *ready):
                return

    def _send(
        self,
        client: mqtt.Client,
        ident: int,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        packed: bytes | None,
    ) -> bool:
        """Hand one publish to paho (False: it failed, and the appliance is told); a QoS > 0
        one already holds its place in the window."""
        properties = PackedPublishProperties(packed) if packed is not None else None
        try:
            info = client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
            rc = info.rc
        except ValueError as exc:  # a topic or payload paho refuses: this publish fails, not us
            logger.error("paho refused a publish on %s: %s", topic, exc)
            rc = mqtt.MQTT_ERR_INVAL
        if rc != mqtt.MQTT_ERR_SUCCESS:
            if qos:
                self._window.acknowledged()  # never in flight: its place is free again
            self._event((PUBLISH_FAILED, ident, int(rc)))
            return False
        if qos:  # sent (or in paho's buffer): acknowledged by a PUBACK (PUBCOMP)
            self._ids[info.mid] = ident
        else:  # QoS 0 counts as published once written
            self._ids_qos0[info.mid] = ident
        return True

    def _drop_client(self) -> None:
        """Forget the client. Its connection is closed without a DISCONNECT: the appliance
        sends that when it ends a session; when it did not (it was killed, or lost the
        channel), the broker then publishes the last will, as for a device that went away."""
        client, self.client = self.client, None
        if client is not None:
            client.on_connect = client.on_disconnect = None  # nothing of it reaches the next one
            client.on_publish = client.on_message = None
            self._flush_writes(client)  # what the appliance sent last (its DISCONNECT) goes out
            sock = client.socket()
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()
        self._ids.clear()
        self._ids_qos0.clear()
        self._window.clear()  # the appliance publishes what waited again, on the next client

    @staticmethod
    def _flush_writes(client: mqtt.Client) -> None:
        """Write what paho still holds, for up to ``FLUSH_S`` (a slow link, a full window)."""
        deadline = time.monotonic() + FLUSH_S
        while client.want_write() and (sock := client.socket()) is not None:
            client.loop_write()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if client.want_write() and client.socket() is not None:
                with contextlib.suppress(OSError, ValueError):
                    select.select([], [sock], [], min(left, 0.1))

    # -- paho's callbacks (inside loop_read, loop_write, loop_misc or a publish) -------------

    def _on_register_write(self, _c: mqtt.Client, _u: object, _sock: object) -> None:
        return None  # the loop asks ``want_write`` every round

    def _on_connect(
        self, _c: mqtt.Client, _u: object, _f: object, code: ReasonCode, properties: object
    ) -> None:
        receive_maximum = int(getattr(properties, "ReceiveMaximum", 0) or 0)
        self._window.set_broker_limit(receive_maximum)
        if 0 < receive_maximum < self._window.limit:
            logger.warning(
                "the broker takes at most %d unacknowledged messages (its Receive Maximum): "
                "the in-flight window is %d, not %d (uplink.inflight_window)",
                receive_maximum,
                receive_maximum,
                self._window.limit,
            )
        self._event((CONNACK, code.value, code.packetType))

    def _on_disconnect(
        self, _c: mqtt.Client, _u: object, _f: object, code: ReasonCode, _p: object
    ) -> None:
        self._event((DISCONNECTED, code.value, code.packetType))

    def _on_publish(
        self, _c: mqtt.Client, _u: object, mid: int, code: ReasonCode, _p: object
    ) -> None:
        ident = self._ids.pop(mid, None)
        if ident is not None:
            self._window.acknowledged()
        else:
            ident = self._ids_qos0.pop(mid, None)
        if ident is not None:
            self._event((ACK, ident, code.value), urgent=False)

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        self._event((MESSAGE, message.topic, bytes(message.payload)))


def main(argv: list[str]) -> int:
    """``python -m edge.uplink.link_process FD``: serve the appliance on the socket FD."""
    # The appliance decides when the link ends (it says goodbye first): a stop signal for
    # the service's whole group must not cut the connection before that.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="moltbot-link: %(levelname)s %(message)s")
    LinkServer(Connection(int(argv[1]))).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
