"""The one place that turns ``uplink`` config into an :class:`Uplink` with its dialect."""

from __future__ import annotations

from edge.config.model import MoltbotConfig
from edge.errors import DependencyMissingError
from edge.outbox.store import Outbox
from edge.uplink.dialect import Dialect, ModelInfo
from edge.uplink.sync import Uplink
from edge.uplink.topics import TopicScheme

BD_SEQ_FILE = "sparkplug-bdseq"


def build_uplink(
    config: MoltbotConfig,
    outbox: Outbox,
    device_id: str | None = None,
    *,
    model_info: ModelInfo | None = None,
) -> Uplink:
    topics = TopicScheme.from_config(config, device_id)
    dialect: Dialect | None = None
    if config.uplink.mode == "sparkplug":
        dialect = _sparkplug(config, topics, outbox, model_info)
    uplink = Uplink(
        outbox,
        config.uplink,
        topics,
        sweep_interval_s=config.cache.sweep_interval_s,
        dialect=dialect,
    )
    if dialect is not None:
        _attach(uplink)
    return uplink


def _sparkplug(
    config: MoltbotConfig, topics: TopicScheme, outbox: Outbox, model_info: ModelInfo | None
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
    settings = config.uplink.sparkplug
    dialect = SparkplugDialect(
        SparkplugTopics(
            settings.group_id or config.device.site,
            settings.edge_node_id or topics.device,
            settings.device_id,
        ),
        topics,
        outbox,
        BdSeqStore(config.device.data_dir / BD_SEQ_FILE),
        primary_host_id=settings.primary_host_id,
        data_qos=settings.data_qos,
        node_data_interval_s=settings.node_data_interval_s,
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
