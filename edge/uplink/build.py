"""Turns the ``uplink`` section into an :class:`Uplink` with its dialect (JSON or Sparkplug B).

``edge.wiring`` calls it with the sections it needs; nothing here reads the whole config.
"""

from __future__ import annotations

from pathlib import Path

from edge.config.model import UplinkSettings
from edge.errors import DependencyMissingError
from edge.outbox.store import Outbox
from edge.uplink.dialect import Dialect, ModelInfo
from edge.uplink.sync import Uplink
from edge.uplink.topics import TopicScheme

BD_SEQ_FILE = "sparkplug-bdseq"


def build_uplink(
    settings: UplinkSettings,
    outbox: Outbox,
    topics: TopicScheme,
    *,
    data_dir: Path,
    sweep_interval_s: float,
    model_info: ModelInfo | None = None,
) -> Uplink:
    dialect: Dialect | None = None
    if settings.mode == "sparkplug":
        dialect = _sparkplug(settings, topics, outbox, data_dir, model_info)
    uplink = Uplink(
        outbox,
        settings,
        topics,
        sweep_interval_s=sweep_interval_s,
        dialect=dialect,
    )
    if dialect is not None:
        _attach(uplink)
    return uplink


def _sparkplug(
    settings: UplinkSettings,
    topics: TopicScheme,
    outbox: Outbox,
    data_dir: Path,
    model_info: ModelInfo | None,
) -> Dialect:
    try:
        from edge.uplink.sparkplug.node import BdSeqStore, SparkplugDialect  # noqa: PLC0415
        from edge.uplink.sparkplug.topics import SparkplugTopics  # noqa: PLC0415
    except ImportError as exc:
        raise DependencyMissingError(
            f"the Sparkplug B uplink needs protobuf: {exc}",
            where="uplink.mode",
            hint="pip install 'moltbot-edge[sparkplug]', or set uplink.mode: json",
        ) from exc
    sparkplug = settings.sparkplug
    dialect = SparkplugDialect(
        SparkplugTopics(
            sparkplug.group_id or topics.site,
            sparkplug.edge_node_id or topics.device,
            sparkplug.device_id,
        ),
        topics,
        outbox,
        BdSeqStore(data_dir / BD_SEQ_FILE),
        primary_host_id=sparkplug.primary_host_id,
        data_qos=sparkplug.data_qos,
        node_data_interval_s=sparkplug.node_data_interval_s,
    )
    if model_info is not None:
        dialect.model_info = model_info
    return dialect


def _attach(uplink: Uplink) -> None:
    """Give a Sparkplug node what it reports about the link and the commands it accepts."""
    from edge.uplink.sparkplug.node import NodeStatus, SparkplugDialect  # noqa: PLC0415

    dialect = uplink.dialect
    if isinstance(dialect, SparkplugDialect):
        dialect.node_status = lambda: NodeStatus(uplink.state.value, uplink.counters.connects_total)
        dialect.command_names = lambda: uplink.commands.names
