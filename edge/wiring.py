"""The one place that turns config into objects: outbox, topics, uplink, inference, voice, RAUC.

Everything above this layer (the service, the API, the CLI, the self-test) gets its parts from
here, so the wiring is written once. Each function builds what it names from the config and
returns it; nothing here runs at import, starts a thread or touches the network.

Device identity: the id is read or created (once, in the data dir) only by what needs it to
send — :func:`device_identity` for the running appliance, and the first message an outbox
queues. A read-only command (``moltbot outbox stats``) never writes the device-id file.

Heavy libraries (ONNX Runtime, Vosk, paho) are imported inside the function that needs them:
``moltbot event send`` must start fast.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from edge.board import BoardProfile, backend_order, configured_profile
from edge.config.model import MoltbotConfig
from edge.identity import device_id
from edge.outbox.clock import ClockSource
from edge.outbox.store import Outbox
from edge.uplink.topics import TopicScheme

if TYPE_CHECKING:
    from edge.inference.registry import ModelRegistry
    from edge.inference.service import InferenceService
    from edge.triggers.pipeline import TriggerPipeline
    from edge.update.rauc import RaucClient
    from edge.uplink.dialect import ModelInfo
    from edge.uplink.sync import Uplink
    from edge.voice.service import ActionHandler, VoiceService


def board_profile(config: MoltbotConfig) -> BoardProfile | None:
    """The configured board's profile; ``None`` for an unknown board (no RTC to trust)."""
    return configured_profile(config.device.board)


def device_identity(config: MoltbotConfig) -> str:
    """This device's id: ``device.id``, or the one stored in the data dir (created once)."""
    return device_id(config)


def topic_scheme(config: MoltbotConfig, device: str | None = None) -> TopicScheme:
    """The MQTT topics of ``device`` (default: this device's id, created if it has none)."""
    return TopicScheme(
        config.uplink.topic_prefix, config.device.site, device or device_identity(config)
    )


class _EventTopics:
    """``topic_for`` of an outbox: resolves the device id when the first message needs it."""

    def __init__(self, config: MoltbotConfig, device: str | None) -> None:
        self._config = config
        self._scheme = topic_scheme(config, device) if device else None
        self._lock = threading.Lock()

    def __call__(self, kind: str) -> str:
        if self._scheme is None:
            with self._lock:
                if self._scheme is None:
                    self._scheme = topic_scheme(self._config)
        return self._scheme.event(kind)


def open_outbox(
    config: MoltbotConfig,
    *,
    device: str | None = None,
    has_rtc: bool | None = None,
    clock: ClockSource | None = None,
) -> Outbox:
    """The outbox in the data dir; ``has_rtc`` defaults to the configured board's profile."""
    if has_rtc is None:
        profile = board_profile(config)
        has_rtc = bool(profile and profile.has_rtc)
    return Outbox.from_settings(
        config.cache,
        config.paths().outbox_dir,
        _EventTopics(config, device),
        has_rtc=has_rtc,
        clock=clock,
    )


def build_uplink(
    config: MoltbotConfig,
    outbox: Outbox,
    device: str | None = None,
    *,
    model_info: ModelInfo | None = None,
) -> Uplink:
    """The MQTT uplink (JSON or Sparkplug B, as ``uplink.mode`` says) draining ``outbox``."""
    from edge.uplink.build import build_uplink as uplink_from_settings  # noqa: PLC0415 - paho

    return uplink_from_settings(
        config.uplink,
        outbox,
        topic_scheme(config, device),
        data_dir=config.device.data_dir,
        sweep_interval_s=config.cache.sweep_interval_s,
        model_info=model_info,
    )


def model_registry(config: MoltbotConfig) -> ModelRegistry:
    """The installed model versions under the data dir."""
    from edge.inference.registry import ModelRegistry  # noqa: PLC0415 - numpy, onnx

    return ModelRegistry(config.paths().model_dir)


def inference_service(
    config: MoltbotConfig, registry: ModelRegistry | None = None
) -> InferenceService:
    """The inference service on this board's backend order (``registry``: another folder)."""
    from edge.inference.service import InferenceService  # noqa: PLC0415 - onnxruntime

    return InferenceService(
        config.inference,
        registry or model_registry(config),
        backend_order(board_profile(config)),
        config.paths().engine_cache_dir,
    )


def trigger_pipeline(
    config: MoltbotConfig, inference: InferenceService, outbox: Outbox
) -> TriggerPipeline:
    """Frames → model → trigger decisions → defect events in ``outbox``."""
    from edge.triggers.pipeline import TriggerPipeline  # noqa: PLC0415

    return TriggerPipeline(config.triggers, inference, outbox)


def voice_service(config: MoltbotConfig, outbox: Outbox, act: ActionHandler) -> VoiceService:
    """Voice commands with the configured Vosk model; ``act`` does what an intent asks."""
    from edge.voice.service import VoiceService  # noqa: PLC0415 - vosk

    return VoiceService(config.voice, config.paths().vosk_model_dir, outbox, act)


def rauc_client(config: MoltbotConfig) -> RaucClient:
    """The ``rauc`` command line with ``updates.rauc_system_conf`` and the install timeout."""
    from edge.update.rauc import RaucClient  # noqa: PLC0415 - only for update commands

    return RaucClient(
        system_conf=config.updates.rauc_system_conf,
        install_timeout_s=config.updates.install_timeout_s,
    )
