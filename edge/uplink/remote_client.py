"""The appliance's side of the link process: a paho-like client whose paho runs over there.

:class:`LinkProcess` starts ``python -m edge.uplink.link_process`` on first use (again after it
died) and owns the channel; :meth:`LinkProcess.client` is the uplink's client factory and
answers a :class:`RemoteClient`. Publishes are handed over in batches and answered at once
with an id of this side's own; the PUBACK comes back as ``on_publish`` with that id, on the
channel's reader thread, which plays the part of paho's network thread for every callback.
When the link process dies the current client hears a disconnect, so the uplink reconnects
(through a new link process) and resends what was not acknowledged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import site
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

import edge
from edge.config.model import UplinkSettings
from edge.errors import MoltbotError
from edge.uplink import link_process as wire
from edge.uplink.connection import ClientOptions
from edge.uplink.link_channel import BatchSender, ChannelClosedError

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0  # a first answer waits for the link process to start (import paho)
CHANNEL_CLOSED = 0  # the request id of the answer the reader gives when the channel closes
ANSWER_MARGIN_S = 10.0  # beyond the connect timeout, before the link process counts as stuck
CLOSE_TIMEOUT_S = 5.0


class LinkProcessError(MoltbotError):
    """The link process could not be started or stopped answering."""


class RemotePublishInfo:
    """``publish``'s answer: this side's id, and whether its PUBACK came back."""

    __slots__ = ("_published", "mid", "rc")

    def __init__(self, mid: int, rc: int = mqtt.MQTT_ERR_SUCCESS) -> None:
        self.mid = mid
        self.rc = rc
        self._published = False

    def is_published(self) -> bool:
        return self._published


class RemoteClient:
    """What the uplink uses of a paho client; the client itself lives in the link process."""

    def __init__(self, link: LinkProcess, connect_timeout_s: float) -> None:
        self._link = link
        self._answer_timeout_s = connect_timeout_s + ANSWER_MARGIN_S
        self._unacknowledged: dict[int, RemotePublishInfo] = {}
        self._stopped = False  # after loop_stop, as with paho: no callback any more
        self.on_connect: Any = None
        self.on_disconnect: Any = None
        self.on_publish: Any = None
        self.on_message: Any = None

    # -- the uplink's calls -----------------------------------------------------------------

    def will_set(
        self,
        topic: str,
        payload: str | bytes | None = None,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        self._call("will_set", topic, payload, qos, retain, properties)

    def max_inflight_messages_set(self, inflight: int) -> None:
        self._call("max_inflight_messages_set", inflight)

    def max_queued_messages_set(self, queue_size: int) -> None:
        self._call("max_queued_messages_set", queue_size)

    def connect(self, host: str, port: int = 1883, keepalive: int = 60) -> None:
        """Raises what paho's ``connect`` raised over there (``OSError``, ``ssl.SSLError``);
        a link process that does not answer is a ``ConnectionError`` too (retried)."""
        try:
            self._link.ask(wire.CONNECT, (host, port, keepalive), self._answer_timeout_s)
        except LinkProcessError as exc:
            raise ConnectionError(exc.what) from exc

    def loop_start(self) -> None:
        return None  # the link process runs paho's loop whenever it has a client

    def loop_stop(self) -> None:
        self._stopped = True

    def disconnect(self) -> None:
        self._call("disconnect")

    def forget_waiting(self) -> None:
        """Drop the publishes that wait for the in-flight window over there (never sent: the
        outbox still holds them); those in flight stay (``FirstPublisher``)."""
        self._call("forget_waiting")

    def subscribe(self, topic: str, qos: int = 0) -> None:
        self._call("subscribe", topic, qos)

    def publish(
        self,
        topic: str,
        payload: str | bytes | None = None,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
        *,
        first: bool = False,
    ) -> RemotePublishInfo:
        """paho's ``publish``; ``first``: ahead of what waits for the in-flight window over
        there (``FirstPublisher``)."""
        info = RemotePublishInfo(self._link.next_id())
        if isinstance(payload, str):
            payload = payload.encode()
        packed = properties.pack() if properties is not None else None  # type: ignore[no-untyped-call]
        self._unacknowledged[info.mid] = info
        try:
            self._link.send(
                (wire.PUBLISH, info.mid, topic, payload or b"", qos, retain, packed, first)
            )
        except ChannelClosedError:
            del self._unacknowledged[info.mid]
            info.rc = mqtt.MQTT_ERR_NO_CONN
        return info

    def _call(self, name: str, *args: Any) -> None:
        try:
            self._link.send((wire.CALL, name, args))
        except ChannelClosedError:
            logger.debug("MQTT %s not sent: the link process is gone", name)

    # -- events from the link process (the channel's reader thread) -----------------------

    def heard(self, event: tuple[Any, ...]) -> None:
        if self._stopped:
            return
        kind = event[0]
        if kind == wire.ACK:
            info = self._unacknowledged.pop(event[1], None)
            if info is not None:
                info._published = True
            if self.on_publish is not None:
                self.on_publish(self, None, event[1], _puback_code(event[2]), None)
        elif kind == wire.CONNACK:
            if self.on_connect is not None:
                self.on_connect(self, None, None, ReasonCode(event[2], identifier=event[1]), None)
        elif kind == wire.DISCONNECTED:
            self.lost(ReasonCode(event[2], identifier=event[1]))
        elif kind == wire.MESSAGE:
            if self.on_message is not None:
                message = mqtt.MQTTMessage(topic=event[1].encode())
                message.payload = event[2]
                self.on_message(self, None, message)
        elif kind == wire.PUBLISH_FAILED:
            logger.warning(
                "publish failed in the link process (%s); resuming after reconnect",
                mqtt.error_string(event[2]),
            )
            self._unacknowledged.pop(event[1], None)
            self._call("disconnect")
            self.lost(ReasonCode(PacketTypes.DISCONNECT, "Unspecified error"))

    def lost(self, code: ReasonCode) -> None:
        if self.on_disconnect is not None and not self._stopped:
            self.on_disconnect(self, None, None, code, None)


_PUBACK_CODES: dict[int, ReasonCode] = {}


def _puback_code(value: int) -> ReasonCode:
    """PUBACK reason codes, made once each (paho's ``ReasonCode`` is slow to build)."""
    code = _PUBACK_CODES.get(value)
    if code is None:
        code = _PUBACK_CODES[value] = ReasonCode(PacketTypes.PUBACK, identifier=value)
    return code


class LinkProcess:
    """The link process and the channel to it: one per uplink, started on first use."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None
        self._connection: Connection | None = None
        self._commands: BatchSender | None = None
        # (request, error or None); (CHANNEL_CLOSED, the connection that closed)
        self._answers: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        self._last_request = 0
        self._last_id = 0  # publish ids: never the same twice, whichever client
        self._client: RemoteClient | None = None

    def client(self, settings: UplinkSettings, client_id: str) -> RemoteClient:
        """The uplink's client factory: a fresh client (over there) for every connection."""
        try:
            self._ensure_running()
        except (OSError, RuntimeError) as exc:  # no descriptors, threads or memory left
            self._stop_process()
            raise LinkProcessError(
                f"cannot start the MQTT link process: {exc}",
                where="uplink.link_process",
                hint="it is tried again at the next connect; set uplink.link_process: false "
                "to run MQTT in the appliance's process",
            ) from exc
        self._client = None  # what the previous client still hears is for nobody
        self.ask(wire.BUILD, (ClientOptions.of(settings), client_id), START_TIMEOUT_S)
        remote = RemoteClient(self, settings.connect_timeout_s)
        self._client = remote
        return remote

    def next_id(self) -> int:
        """A publish id (one thread publishes at a time: the uplink's worker)."""
        self._last_id += 1
        return self._last_id

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def send(self, command: tuple[Any, ...]) -> None:
        if self._commands is None:
            raise ChannelClosedError("the link process is not running")
        self._commands.put(command)

    def ask(self, kind: str, args: tuple[Any, ...], timeout_s: float) -> None:
        """A command that is answered; raises the error it was answered with."""
        self._last_request += 1
        request = self._last_request
        try:
            self.send((kind, request, *args))
        except ChannelClosedError as exc:
            self._stop_process()
            raise LinkProcessError(
                f"the MQTT link process is gone: {exc}",
                where="uplink.link_process",
                hint="it is restarted at the next connect; its exit is logged above",
            ) from exc
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                answered, error = self._answers.get(timeout=left)
            except queue.Empty:
                break
            if answered == CHANNEL_CLOSED:
                if error is not self._connection:
                    continue  # an earlier link process's end, told late
                self._stop_process()
                raise LinkProcessError(
                    f"the MQTT link process ended before it answered {kind}",
                    where="uplink.link_process",
                    hint="it is restarted at the next connect; its exit is logged above",
                )
            if answered != request:
                continue  # the late answer of a request that timed out
            if isinstance(error, BaseException):
                raise error
            return
        self._stop_process()
        raise LinkProcessError(
            f"the MQTT link process did not answer {kind} within {timeout_s:.0f} s",
            where="uplink.link_process",
            hint="it is restarted at the next connect; set uplink.link_process: false to run "
            "MQTT in the appliance's own process",
        )

    def close(self) -> None:
        """End the link process (after the uplink said goodbye and disconnected)."""
        self._stop_process()

    # -- the process ----------------------------------------------------------------------

    def _ensure_running(self) -> None:
        if self._running():
            return
        self._stop_process()
        while not self._answers.empty():  # for the process that ended: nobody asked them
            self._answers.get_nowait()
        ours, theirs = socket.socketpair()
        with theirs:
            python_path = _python_path_for_edge()
            try:
                self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                    [sys.executable, "-m", "edge.uplink.link_process", str(theirs.fileno())],
                    pass_fds=(theirs.fileno(),),
                    stdin=subprocess.DEVNULL,
                    env=_environment(python_path),
                )
            except OSError:
                ours.close()
                raise
        # The channel reads and writes a duplicate; shutting ``ours`` down ends the reader.
        connection = Connection(os.dup(ours.fileno()))
        self._socket = ours
        self._connection = connection
        self._commands = BatchSender(connection, "link-commands")
        threading.Thread(
            target=self._read, args=(connection,), name="link-events", daemon=True
        ).start()

    def _running(self) -> bool:
        commands, process = self._commands, self._process
        return (
            process is not None
            and process.poll() is None
            and commands is not None
            and not commands.broken.is_set()
        )

    def _read(self, connection: Connection) -> None:
        """The channel's reader: answers to ``ask``, events to the current client (only while
        ``connection`` is the current channel: a replaced one's events are for nobody)."""
        try:
            while True:
                try:
                    batch = connection.recv()
                except (EOFError, OSError):
                    break
                for event in batch:
                    if event[0] == wire.ANSWER:
                        self._answers.put((event[1], event[2]))
                    elif connection is self._connection and self._client is not None:
                        self._client.heard(event)
        except Exception:  # what cannot be read or handled: the channel is of no use any more
            logger.exception("the MQTT link channel failed; the link process is restarted")
        connection.close()
        if connection is not self._connection:
            return  # ended on purpose (``_stop_process``), or replaced already
        client = self._client
        self._answers.put((CHANNEL_CLOSED, connection))  # an ``ask`` waiting now: no answer
        if self._commands is not None:
            self._commands.broken.set()  # the next publish fails, the next connect restarts
        logger.error(
            "the MQTT link process ended (exit code %s); it is restarted at the next connect",
            self._exit_code(),
        )
        if client is not None:
            client.lost(ReasonCode(PacketTypes.DISCONNECT, "Unspecified error"))

    def _exit_code(self) -> int | None:
        process = self._process
        if process is None:
            return None
        try:
            return process.wait(1.0)  # it is exiting, or about to be reaped
        except subprocess.TimeoutExpired:
            return None

    def _stop_process(self) -> None:
        self._connection = None  # its reader closes it: the end is on purpose, not a failure
        commands, self._commands = self._commands, None
        process, self._process = self._process, None
        sock, self._socket = self._socket, None
        if commands is not None:
            commands.close()  # what was queued (the last disconnect) goes out first
        if sock is not None:
            with contextlib.suppress(OSError):  # the link process may be gone already
                sock.shutdown(socket.SHUT_RDWR)  # both ends read end-of-file
            sock.close()  # the reader closes ``connection`` (its duplicate) when it sees that
        if process is not None:
            try:
                process.wait(CLOSE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                logger.warning("the MQTT link process did not exit; killing it")
                process.kill()
                try:
                    process.wait(CLOSE_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    logger.error("the MQTT link process (pid %d) outlived SIGKILL", process.pid)


def _python_path_for_edge() -> str:
    """``PYTHONPATH`` for the link process: the folder holding ``edge`` first when it is not
    an installed package's (a source tree), never a site-packages ahead of the standard
    library."""
    package_root = str(Path(edge.__file__).resolve().parents[1])
    installed = {str(Path(p).resolve()) for p in site.getsitepackages()}
    inherited = os.environ.get("PYTHONPATH", "")
    if package_root in installed:
        return inherited
    return os.pathsep.join(p for p in (package_root, inherited) if p)


def _environment(python_path: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return env | {"PYTHONPATH": python_path} if python_path else env
