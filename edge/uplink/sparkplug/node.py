"""The appliance as a Sparkplug B Edge Node, as an uplink dialect (see ``edge.uplink.dialect``).

Session: the last will is an NDEATH carrying this connection's ``bdSeq`` (persisted, +1 per
CONNECT, 0-255). After CONNACK the node subscribes to its NCMD/DCMD topics, the JSON ``cmd/``
topics and, when ``primary_host_id`` is set, the host's STATE topic; it publishes NBIRTH (seq 0,
the same bdSeq) and DBIRTH once the primary host says it is online. Every later message carries
the next ``seq`` (mod 256). Outbox messages become DDATA; those accepted before the current
birth are marked ``is_historical``. STATE ``online: false`` (newer than the last STATE seen):
publish NDEATH, end the session, reconnect and wait: the data stays in the outbox meanwhile.
NCMD ``Node Control/Rebirth`` = true republishes the births. A metric that the last DBIRTH did
not declare (a new class, a new event kind) triggers a rebirth first.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge import __version__
from edge.errors import MoltbotError
from edge.outbox.store import Outbox
from edge.uplink.dialect import ModelInfo, Outgoing, Reaction, Stamped
from edge.uplink.link_client import LinkClient, PublishInfo
from edge.uplink.sparkplug import payloads as p
from edge.uplink.sparkplug.payloads import DataType, Metric
from edge.uplink.sparkplug.topics import SparkplugTopics
from edge.uplink.topics import TopicScheme

logger = logging.getLogger(__name__)
COUNTED_IDS_KEPT = 10_000  # a message resent after a reconnect keeps the count it was given


@dataclass(frozen=True)
class NodeStatus:
    uplink_state: str
    connects_total: int


class BdSeqStore:
    """The birth/death sequence number, kept across restarts in one small file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._value: int | None = None

    def next(self) -> int:
        last = self._value if self._value is not None else self._read()
        self._value = 0 if last is None else (last + 1) % 256
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(f"{self._value}\n")
            os.replace(temporary, self.path)
        except OSError as exc:
            logger.warning("cannot store the Sparkplug bdSeq in %s: %s", self.path, exc)
        return self._value

    def _read(self) -> int | None:
        try:
            return int(self.path.read_text().strip()) % 256
        except (OSError, ValueError):
            return None


class SparkplugDialect:
    live_may_overtake = False  # DDATA's seq is given at encoding: sent in that order

    def __init__(
        self,
        topics: SparkplugTopics,
        json_topics: TopicScheme,
        outbox: Outbox,
        bd_seq: BdSeqStore,
        *,
        primary_host_id: str | None,
        data_qos: int,
        node_data_interval_s: float,
    ) -> None:
        self.topics = topics
        self.json_topics = json_topics
        self.outbox = outbox
        self.bd_seq_store = bd_seq
        self.primary_host_id = primary_host_id
        self.data_qos = data_qos
        self.node_data_interval_s = node_data_interval_s
        self.model_info: ModelInfo = lambda: None
        self.node_status: Callable[[], NodeStatus] = lambda: NodeStatus("connected", 0)
        self.command_names: Callable[[], list[str]] = list
        self.bd_seq = -1
        self.seq = 0
        self.born = False
        self.host_online = primary_host_id is None
        self.host_timestamp = -1
        self.birth_mark = 0  # outbox messages up to this seq were accepted before the birth
        self.births_total = 0
        self.counts: dict[str, int] = {}
        self._counted: OrderedDict[str, int] = OrderedDict()
        self._last: dict[str, Metric] = {}
        self._declared: set[str] = set()
        self._node_sent: tuple[int, str, int] | None = None
        self._next_node_data = 0.0

    # -- session ------------------------------------------------------------------------

    def will(self, client: LinkClient) -> None:
        self.bd_seq = self.bd_seq_store.next()
        self.born = False
        self.host_online = self.primary_host_id is None
        client.will_set(self.topics.node("NDEATH"), self._death(), qos=1, retain=False)

    def begin(self, client: LinkClient) -> None:
        client.subscribe(self.topics.node("NCMD"), qos=1)
        client.subscribe(self.topics.device("DCMD"), qos=1)
        client.subscribe(self.json_topics.command_filter, qos=1)
        if self.primary_host_id is not None:
            client.subscribe(SparkplugTopics.state(self.primary_host_id), qos=1)
            logger.info("Sparkplug: waiting for primary host %s to be online", self.primary_host_id)
        else:
            self._birth(client)

    def ready(self) -> bool:
        return self.born

    def goodbye(self, client: LinkClient) -> PublishInfo:
        self.born = False
        return client.publish(self.topics.node("NDEATH"), self._death(), qos=1, retain=False)

    def tick(self, client: LinkClient) -> None:
        """NDATA with the node's metrics when they changed, at most every interval."""
        now = time.monotonic()
        if not self.born or now < self._next_node_data:
            return
        self._next_node_data = now + self.node_data_interval_s
        metrics = self._node_metrics()[3:]
        current = tuple(m.value for m in metrics)
        if current != self._node_sent:
            self._node_sent = current  # type: ignore[assignment]
            self._publish(client, self.topics.node("NDATA"), metrics, qos=0)

    # -- incoming -----------------------------------------------------------------------

    def on_message(self, client: LinkClient, topic: str, payload: bytes) -> Reaction:
        if self.primary_host_id is not None and topic == SparkplugTopics.state(
            self.primary_host_id
        ):
            return self._on_state(client, payload)
        if topic in (self.topics.node("NCMD"), self.topics.device("DCMD")):
            return self._on_command(client, topic, payload)
        name = self.json_topics.command_name(topic)
        return Reaction(commands=[(name, payload)] if name else [])

    def _on_state(self, client: LinkClient, payload: bytes) -> Reaction:
        try:
            state = json.loads(payload)
            online, timestamp = bool(state["online"]), int(state["timestamp"])
        except (ValueError, KeyError, TypeError):
            logger.warning("ignoring a malformed STATE message from %s", self.primary_host_id)
            return Reaction()
        if timestamp < self.host_timestamp:
            return Reaction()  # an older STATE than one already seen (Sparkplug 3.0)
        self.host_timestamp = timestamp
        self.host_online = online
        if online and not self.born:
            logger.info("Sparkplug: primary host %s is online", self.primary_host_id)
            self._birth(client)
        elif not online and self.born:
            logger.warning(
                "Sparkplug: primary host %s went offline; holding data in the outbox",
                self.primary_host_id,
            )
            self.goodbye(client)
            return Reaction(end_session=True)
        return Reaction()

    def _on_command(self, client: LinkClient, topic: str, payload: bytes) -> Reaction:
        try:
            metrics = p.decode_command(payload, topic)
        except MoltbotError as exc:
            logger.warning("%s", exc)
            return Reaction()
        reaction = Reaction()
        for name, value in metrics.items():
            if name == p.REBIRTH and value is True and self.host_online:
                logger.info("Sparkplug: rebirth requested")
                self._birth(client)
            elif name.startswith(p.COMMAND_PREFIX) and value not in (None, False):
                arguments = value if isinstance(value, str) else "{}"
                reaction.commands.append((name[len(p.COMMAND_PREFIX) :], arguments.encode()))
        return reaction

    # -- outgoing -----------------------------------------------------------------------

    def encode(self, client: LinkClient, item: Stamped) -> Outgoing:
        message = item.message
        historical = message.seq <= self.birth_mark
        label = str(message.payload.get("class"))
        count = self._counted.get(message.id)
        if count is None and message.kind == "defect":
            count = self.counts.get(label, 0) + 1
            self.counts[label] = count
            self._counted[message.id] = count
            if len(self._counted) > COUNTED_IDS_KEPT:
                self._counted.popitem(last=False)
        metrics = p.event_metrics(
            message,
            timestamp_ms=int(item.created_at * 1000),
            historical=historical,
            count=count or 0,
        )
        self._remember(metrics)
        if any(metric.name not in self._declared for metric in metrics):
            self._birth(client)  # a class or event kind the host has not been told about
        payload = p.encode(metrics, timestamp_ms=_now_ms(), seq=self._next_seq())
        return Outgoing(self.topics.device("DDATA"), payload, self.data_qos)

    def _remember(self, metrics: list[Metric]) -> None:
        """The newest value of each metric, for the next births."""
        for metric in metrics:
            known = self._last.get(metric.name)
            if known is None or (known.timestamp_ms or 0) <= (metric.timestamp_ms or 0):
                self._last[metric.name] = Metric(
                    metric.name, metric.datatype, metric.value, metric.timestamp_ms
                )

    def _birth(self, client: LinkClient) -> None:
        self.seq = 0
        self.births_total += 1
        self.birth_mark = max(self.birth_mark, self.outbox.last_seq())
        node = self._node_metrics()
        self._node_sent = tuple(m.value for m in node[3:])  # type: ignore[assignment]
        self._next_node_data = time.monotonic() + self.node_data_interval_s
        self._publish(client, self.topics.node("NBIRTH"), node, qos=0)
        device = self._device_metrics()
        self._declared = {metric.name for metric in device}
        self._publish(client, self.topics.device("DBIRTH"), device, qos=0)
        self.born = True
        logger.info(
            "Sparkplug: NBIRTH/DBIRTH published (bdSeq %d, %d device metrics)",
            self.bd_seq,
            len(device),
        )

    def _publish(self, client: LinkClient, topic: str, metrics: list[Metric], qos: int) -> None:
        payload = p.encode(metrics, timestamp_ms=_now_ms(), seq=self._next_seq())
        client.publish(topic, payload, qos=qos, retain=False)

    def _next_seq(self) -> int:
        seq = self.seq
        self.seq = (self.seq + 1) % 256
        return seq

    def _death(self) -> bytes:
        return p.encode(
            [Metric(p.BD_SEQ, DataType.INT64, self.bd_seq)], timestamp_ms=_now_ms(), seq=None
        )

    def _node_metrics(self) -> list[Metric]:
        status = self.node_status()
        return [
            Metric(p.BD_SEQ, DataType.INT64, self.bd_seq),
            Metric(p.REBIRTH, DataType.BOOLEAN, False),
            Metric(p.SOFTWARE, DataType.STRING, f"moltbot-edge {__version__}"),
            Metric(p.OUTBOX_DEPTH, DataType.UINT64, len(self.outbox)),
            Metric(p.UPLINK_STATE, DataType.STRING, status.uplink_state),
            Metric(p.UPLINK_CONNECTS, DataType.UINT64, status.connects_total),
        ]

    def _device_metrics(self) -> list[Metric]:
        model = self.model_info()
        labels = set(model.defect_labels if model else ()) | set(self.counts)
        declared = [
            Metric(p.MODEL, DataType.STRING, model.ref if model else None),
            Metric(p.LAST_CLASS, DataType.STRING, None),
            Metric(p.LAST_SCORE, DataType.DOUBLE, None),
            Metric(p.LAST_PART_ID, DataType.STRING, None),
            Metric(p.LAST_FRAME, DataType.STRING, None),
            Metric(p.LAST_EVENT_ID, DataType.STRING, None),
            *(Metric(f"{p.COUNT_PREFIX}{name}", DataType.UINT64, 0) for name in sorted(labels)),
            *(
                Metric(f"{p.EVENT_PREFIX}{kind}", DataType.STRING, None)
                for kind in p.STANDARD_EVENT_KINDS
            ),
            *(
                Metric(f"{p.COMMAND_PREFIX}{name}", DataType.STRING, None)
                for name in self.command_names()
            ),
        ]
        names = {metric.name for metric in declared}
        extra = [metric for name, metric in self._last.items() if name not in names]
        current = [self._last.get(metric.name, metric) for metric in declared]
        if model is not None:
            current[0] = Metric(p.MODEL, DataType.STRING, model.ref)
        return current + extra


def _now_ms() -> int:
    return int(time.time() * 1000)
