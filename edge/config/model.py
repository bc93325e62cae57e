"""The one config model: every setting of the appliance, its type, default and meaning.

This module is the single source for YAML files, ``MOLTBOT_*`` environment variables (and so
balena fleet variables), the JSON Schema and the README's config reference. Paths that default
to a place under ``device.data_dir`` are ``None`` here and resolved by :meth:`MoltbotConfig.paths`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

# MQTT topic levels and hostnames: no '/', '+', '#', spaces or control characters.
TOPIC_SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"

BackendName = Literal["auto", "ort-cpu", "ort-gpu", "tensorrt"]
InferenceBackend = Literal["ort-cpu", "ort-gpu", "tensorrt"]
TriggerMode = Literal["stream", "part"]


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceSettings(Section):
    id: str | None = Field(
        None,
        pattern=TOPIC_SAFE_NAME,
        description="Device id, used as MQTT client id and topic level. Unset: generated at "
        "first boot and stored in the data dir.",
    )
    name: str | None = Field(None, max_length=128, description="Human name shown in events.")
    site: str = Field(
        "default", pattern=TOPIC_SAFE_NAME, description="Site (plant/line) used in MQTT topics."
    )
    board: str = Field(
        "auto",
        description="Board profile name from hw/ (rpi4b, jetson-agx-orin, jetson-agx-xavier, "
        "generic-x86_64), or auto to detect it from the device tree.",
    )
    data_dir: Path = Field(
        Path("/var/lib/moltbot"),
        description="Writable data partition: outbox, models, Vosk model, engine cache.",
    )


class InferenceSettings(Section):
    enabled: bool = Field(True, description="Run the vision model on incoming frames.")
    backend: BackendName = Field(
        "auto",
        description="Inference backend; auto walks the board profile's preference order.",
    )
    model_dir: Path | None = Field(
        None, description="Model registry folder. Unset: {device.data_dir}/models."
    )
    active_model: str = Field("defect", min_length=1, description="Name of the model to serve.")
    precision: Literal["auto", "fp32", "fp16", "int8"] = Field(
        "auto", description="Numeric precision; auto measures the candidates on this device."
    )
    intra_op_threads: int | None = Field(
        None, ge=1, le=256, description="ONNX Runtime threads. Unset: physical CPU cores."
    )
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="ONNX Runtime graph optimisation level."
    )
    enable_cpu_mem_arena: bool = Field(True, description="ONNX Runtime CPU memory arena.")
    engine_cache_dir: Path | None = Field(
        None, description="TensorRT engine cache. Unset: {device.data_dir}/engines."
    )
    tensorrt_workspace_mib: int = Field(
        1024, ge=16, le=65536, description="TensorRT builder workspace limit."
    )
    warmup_runs: int = Field(3, ge=0, le=100, description="Inferences run before serving.")


class TriggerSettings(Section):
    enabled: bool = Field(True, description="Turn model outputs into defect events.")
    watch_dir: Path | None = Field(
        None, description="Folder watched for new frames (images). Unset: no folder source."
    )
    upload_mode: TriggerMode = Field(
        "part",
        description="Frames posted to /v1/infer?trigger=true: part (each frame is its own part: "
        "every defective one is an event, no debounce or cooldown) or stream.",
    )
    folder_mode: TriggerMode = Field(
        "part", description="Frames from watch_dir: part (one file = one part) or stream."
    )
    ok_class: str = Field("ok", description="The class label that means 'no defect'.")
    default_threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="Score above which a defect class fires."
    )
    class_thresholds: dict[str, float] = Field(
        default_factory=dict, description="Per-class thresholds overriding default_threshold."
    )
    debounce_hits: int = Field(
        2, ge=1, description="Stream mode, N of N-of-M debounce: hits needed in the window."
    )
    debounce_window: int = Field(
        3, ge=1, description="Stream mode, M of N-of-M debounce: frames considered."
    )
    cooldown_s: float = Field(
        5.0,
        ge=0.0,
        description="Stream mode: quiet time after an event before the same class fires again.",
    )

    @model_validator(mode="after")
    def _hits_fit_in_window(self) -> TriggerSettings:
        if self.debounce_hits > self.debounce_window:
            raise ValueError(
                f"debounce_hits ({self.debounce_hits}) must not exceed "
                f"debounce_window ({self.debounce_window})"
            )
        for label, threshold in self.class_thresholds.items():
            if not 0.0 <= threshold <= 1.0:
                raise ValueError(f"class_thresholds.{label} must be between 0 and 1")
        return self


class CameraSettings(Section):
    enabled: bool = Field(False, description="Read frames from a USB (UVC/V4L2) camera.")
    device: str = Field(
        "0",
        min_length=1,
        description="Camera: a path (/dev/video0, /dev/v4l/by-id/...), an index, or part of its "
        "name (see moltbot doctor).",
    )
    width: int | None = Field(None, ge=16, le=8192, description="Frame width. Unset: driver's.")
    height: int | None = Field(None, ge=16, le=8192, description="Frame height. Unset: driver's.")
    fps: float = Field(15.0, gt=0.0, le=240.0, description="Frame rate asked of the camera.")
    mode: TriggerMode = Field(
        "stream",
        description="stream: every frame through the model (debounce, cooldown); part: one "
        "frame per capture trigger (the capture command), each its own part.",
    )
    every_nth: int = Field(1, ge=1, description="Stream mode: run every Nth frame.")
    capture_timeout_s: float = Field(
        2.0, gt=0.0, le=60.0, description="Part mode: longest wait for a frame after a trigger."
    )
    reconnect_s: float = Field(
        2.0, gt=0.0, le=300.0, description="Retry period while the camera is missing."
    )
    trigger_gpio_chip: str | None = Field(
        None,
        pattern=r"^/dev/gpiochip\d+$",
        description="Part mode: a GPIO chip whose line triggers a capture (a PLC's photo-eye), "
        "e.g. /dev/gpiochip0. Unset: captures only by command.",
    )
    trigger_gpio_line: int = Field(0, ge=0, le=1023, description="The trigger's line offset.")
    trigger_gpio_edge: Literal["rising", "falling"] = Field(
        "rising", description="The edge that means 'a part is in front of the camera'."
    )
    trigger_gpio_active_low: bool = Field(False, description="The trigger line is active low.")
    trigger_gpio_debounce_ms: float = Field(
        5.0, ge=0.0, le=1000.0, description="Kernel debounce of the trigger line."
    )

    @model_validator(mode="after")
    def _gpio_trigger_needs_part_mode(self) -> CameraSettings:
        if self.trigger_gpio_chip is not None and self.mode != "part":
            raise ValueError(
                "trigger_gpio_chip captures one part per edge: set camera.mode to part"
            )
        return self


IntentAction = Literal[
    "start_inspection", "stop_inspection", "report_status", "switch_model", "none"
]


class IntentSettings(Section):
    phrases: list[str] = Field(
        min_length=1, description="Phrasings that trigger this intent, in the model's language."
    )
    action: IntentAction = Field(description="What the appliance does when the intent fires.")
    min_confidence: float | None = Field(
        None, ge=0.0, le=1.0, description="Overrides voice.min_confidence for this intent."
    )
    model: str | None = Field(None, description="Model name@version for switch_model.")


class VoiceSettings(Section):
    enabled: bool = Field(False, description="Listen to the microphone for voice commands.")
    model_dir: Path | None = Field(
        None, description="Vosk model directory. Unset: {device.data_dir}/vosk-model."
    )
    microphone: bool = Field(
        True, description="Listen to a microphone; false: only POST /v1/asr uploads are heard."
    )
    input_device: str | None = Field(
        None, description="Microphone by PortAudio name (substring) or index. Unset: default."
    )
    sample_rate_hz: int = Field(16000, ge=8000, le=48000, description="Recogniser rate.")
    mode: Literal["grammar", "free"] = Field(
        "grammar", description="grammar: only the intent phrases; free: dictation."
    )
    language: Literal["auto", "ko", "en"] = Field(
        "auto",
        description="Built-in intents and fillers: auto picks the set the model's words cover.",
    )
    min_margin: float = Field(
        1.0,
        ge=0.0,
        description="grammar: a command's score lead over a reading as another command.",
    )
    min_confidence: float = Field(
        0.6, ge=0.0, le=1.0, description="free: lowest word confidence that fires an intent."
    )
    end_of_speech_silence_ms: int = Field(
        128, ge=50, le=5000, description="Trailing non-speech (Silero VAD) that ends an utterance."
    )
    spoken_feedback: bool = Field(False, description="Answer through espeak-ng when installed.")
    intents: dict[str, IntentSettings] = Field(
        default_factory=dict,
        description="Intent name -> phrases and action. Empty: the built-in set for the "
        "model's language (ko, en).",
    )


def _default_priorities() -> dict[str, int]:
    # update: a handful per update (progress, then installed or rolled back); the one that says a
    # slot was rolled back must outlive a full outbox, and they are too few to crowd out defects.
    return {"update": 40, "defect": 30, "voice": 20, "status": 10, "telemetry": 0}


class CacheSettings(Section):
    dir: Path | None = Field(None, description="Outbox folder. Unset: {device.data_dir}/outbox.")
    retention_hours: float = Field(
        72.0, gt=0.0, le=24 * 31, description="Messages older than this are expired, not sent."
    )
    max_bytes: int | None = Field(
        None, ge=1 << 20, description="Outbox size cap. Unset: max_disk_share of the partition."
    )
    max_disk_share: float = Field(
        0.5, gt=0.0, le=0.95, description="Share of the data partition the outbox may use."
    )
    max_message_bytes: int = Field(
        256 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest message accepted; keep it under the broker's message size limit.",
    )
    sweep_interval_s: float = Field(60.0, gt=0.0, description="Period of the expiry sweep.")
    trust_wall_clock: Literal["auto", "always", "when_synced"] = Field(
        "auto",
        description="Is the wall clock right before NTP sync? auto: yes on boards with an RTC.",
    )
    clock_sync_flag: Path = Field(
        Path("/run/systemd/timesync/synchronized"),
        description="File whose existence says the clock is synchronised (systemd-timesyncd).",
    )
    priorities: dict[str, int] = Field(
        default_factory=_default_priorities,
        description="Event kind -> priority; lowest is evicted first when the cap is hit.",
    )


class TlsSettings(Section):
    enabled: bool = Field(False, description="Connect to the broker over TLS.")
    ca_file: Path | None = Field(None, description="CA bundle. Unset: the system's CAs.")
    cert_file: Path | None = Field(None, description="Client certificate (PEM).")
    key_file: Path | None = Field(None, description="Client private key (PEM).")
    insecure_skip_verify: bool = Field(
        False, description="Skip server certificate checks. Never in production."
    )

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be set together")
        return self


class SparkplugSettings(Section):
    group_id: str | None = Field(
        None, pattern=TOPIC_SAFE_NAME, description="Sparkplug group id. Unset: device.site."
    )
    edge_node_id: str | None = Field(
        None, pattern=TOPIC_SAFE_NAME, description="Edge node id. Unset: the device id."
    )
    device_id: str = Field(
        "inspection", pattern=TOPIC_SAFE_NAME, description="Sparkplug device under the node."
    )
    primary_host_id: str | None = Field(
        None,
        pattern=TOPIC_SAFE_NAME,
        description="Primary host application id (e.g. Ignition's); data waits in the outbox "
        "while its STATE is offline and is then sent as historical. Unset: do not wait.",
    )
    data_qos: Literal[0, 1] = Field(
        1,
        description="QoS of DDATA. 1 keeps store-and-forward's guarantee (removed from the "
        "outbox on PUBACK); the specification asks for 0.",
    )
    node_data_interval_s: float = Field(
        10.0, gt=0.0, description="How often NDATA (outbox depth, uplink) is sent when changed."
    )


class UplinkSettings(Section):
    enabled: bool = Field(True, description="Send the outbox to an MQTT broker.")
    mode: Literal["json", "sparkplug"] = Field(
        "json", description="json: the JSON topics; sparkplug: Sparkplug B (see uplink.sparkplug)."
    )
    host: str = Field("localhost", min_length=1, description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is usual for TLS).")
    protocol: Literal["3.1.1", "5"] = Field("5", description="MQTT protocol version.")
    username: str | None = Field(None, description="Broker user name.")
    password: SecretStr | None = Field(None, description="Broker password (secret).")
    tls: TlsSettings = Field(default_factory=TlsSettings)
    topic_prefix: str = Field(
        "moltbot", pattern=TOPIC_SAFE_NAME, description="First level of every topic."
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive.")
    connect_timeout_s: float = Field(5.0, gt=0.0, le=120.0, description="Connect timeout.")
    inflight_window: int = Field(
        64,
        ge=1,
        le=65279,
        description="QoS 1 messages in flight at once during sync; with the link process, an "
        "MQTT 5 broker's smaller Receive Maximum caps it.",
    )
    live_share: float = Field(
        0.25, ge=0.0, lt=1.0, description="Share of the in-flight window kept for live events."
    )
    reconnect_min_s: float = Field(1.0, gt=0.0, description="First reconnect delay.")
    reconnect_max_s: float = Field(60.0, gt=0.0, description="Longest reconnect delay.")
    link_process: bool = Field(
        True,
        description="Run the MQTT client in a process of its own, so that its network work and "
        "the appliance's (outbox, inference, voice) use different cores; off: in the "
        "appliance's process.",
    )
    sparkplug: SparkplugSettings = Field(default_factory=SparkplugSettings)


class ApiSettings(Section):
    enabled: bool = Field(True, description="Serve the local HTTP API.")
    host: str = Field(
        "0.0.0.0",  # noqa: S104 - the line's HMI reaches the appliance over the LAN; auth is on
        description="Bind address.",
    )
    port: int = Field(8080, ge=1, le=65535, description="Bind port.")
    token: SecretStr | None = Field(
        None, description="Bearer token (secret); generated at first boot when unset."
    )
    metrics_require_token: bool = Field(False, description="Ask for the token on /metrics.")
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="Largest accepted upload.")


class LoggingSettings(Section):
    format: Literal["auto", "human", "json"] = Field(
        "auto", description="auto: JSON lines under systemd, human text elsewhere."
    )
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Level.")


class SystemSettings(Section):
    """Applied to the operating system at first boot (from the boot partition's site file)."""

    hostname: str | None = Field(
        None,
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description="Host name. Unset: moltbot-<device id>.",
    )
    wifi_ssid: str | None = Field(None, max_length=32, description="Wi-Fi network name.")
    wifi_psk: SecretStr | None = Field(None, description="Wi-Fi passphrase (secret).")
    wifi_country: str | None = Field(
        None, pattern=r"^[A-Z]{2}$", description="Wi-Fi regulatory country, e.g. DE."
    )
    ssh_authorized_keys: list[str] = Field(
        default_factory=list, description="Public keys allowed to log in as the admin user."
    )


class UpdateSettings(Section):
    """Over-the-air A/B updates of the root file system (RAUC bundles, U-Boot boot counting)."""

    dir: Path | None = Field(
        None,
        description="Downloaded bundles and the update state (pending.json, last-boot.json). "
        "Unset: {device.data_dir}/updates.",
    )
    free_space_margin_mb: int = Field(
        64,
        ge=0,
        le=1 << 20,
        description="Free space left on the data partition beyond the bundle; less: refused.",
    )
    download_attempts: int = Field(
        6,
        ge=1,
        le=100,
        description="Tries in a row without a new byte before a download gives up (a try that "
        "brings bytes resets the count; the partial file is resumed).",
    )
    download_timeout_s: float = Field(
        30.0, gt=0.0, le=600.0, description="Network timeout of each download request."
    )
    install_timeout_s: float = Field(
        3600.0, gt=0.0, description="Longest `rauc install` before it is stopped."
    )
    boot_attempts: int = Field(
        3,
        ge=1,
        le=15,
        description="Boot attempts U-Boot gives a slot (the image's boot script); fewer left "
        "means the booted slot is on trial.",
    )
    health_gate_deadline_s: float = Field(
        600.0,
        gt=0.0,
        le=1500.0,
        description="moltbot-confirm-boot: how long the checks may take to pass before the "
        "slot on trial is marked bad and the device reboots into the other one.",
    )
    rauc_system_conf: Path | None = Field(
        None,
        description="RAUC's system.conf. Unset: RAUC's default (/etc/rauc/system.conf); no such "
        "file means no A/B slots (confirm-boot does nothing).",
    )
    reboot_delay_s: float = Field(
        30.0,
        ge=0.0,
        le=3600.0,
        description="Before rebooting into an installed update: the longest wait for the "
        "inference or capture in flight to finish.",
    )


@dataclass(frozen=True)
class ResolvedPaths:
    """Every path the runtime writes to, with defaults under the data dir filled in."""

    data_dir: Path
    model_dir: Path
    engine_cache_dir: Path
    outbox_dir: Path
    vosk_model_dir: Path
    updates_dir: Path


class MoltbotConfig(Section):
    """The whole configuration of one appliance."""

    device: DeviceSettings = Field(default_factory=DeviceSettings)
    inference: InferenceSettings = Field(default_factory=InferenceSettings)
    triggers: TriggerSettings = Field(default_factory=TriggerSettings)
    camera: CameraSettings = Field(default_factory=CameraSettings)
    voice: VoiceSettings = Field(default_factory=VoiceSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    uplink: UplinkSettings = Field(default_factory=UplinkSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    system: SystemSettings = Field(default_factory=SystemSettings)
    updates: UpdateSettings = Field(default_factory=UpdateSettings)

    def paths(self) -> ResolvedPaths:
        data_dir = self.device.data_dir
        return ResolvedPaths(
            data_dir=data_dir,
            model_dir=self.inference.model_dir or data_dir / "models",
            engine_cache_dir=self.inference.engine_cache_dir or data_dir / "engines",
            outbox_dir=self.cache.dir or data_dir / "outbox",
            vosk_model_dir=self.voice.model_dir or data_dir / "vosk-model",
            updates_dir=self.updates.dir or data_dir / "updates",
        )
