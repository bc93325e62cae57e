"""Building a configured paho client, and a one-shot reachability probe.

Every paho client in the runtime is made here, so protocol version, TLS, credentials and the
client id are applied the same way by the uplink, ``moltbot doctor`` and the tests.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge.errors import ConfigError

if TYPE_CHECKING:  # the link process builds clients without the config model (pydantic)
    from edge.config.model import UplinkSettings


@dataclass(frozen=True)
class TlsOptions:
    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class ClientOptions:
    """What building a client takes from ``uplink``: plain values, cheap to hand to the link
    process (which then needs neither pydantic nor the config model)."""

    protocol: str = "5"
    username: str | None = None
    password: str | None = None
    tls: TlsOptions = TlsOptions()
    connect_timeout_s: float = 5.0

    @classmethod
    def of(cls, settings: UplinkSettings) -> ClientOptions:
        tls = settings.tls
        return cls(
            protocol=settings.protocol,
            username=settings.username,
            password=settings.password.get_secret_value() if settings.password else None,
            tls=TlsOptions(
                tls.enabled, tls.ca_file, tls.cert_file, tls.key_file, tls.insecure_skip_verify
            ),
            connect_timeout_s=settings.connect_timeout_s,
        )


def build_client(options: ClientOptions, client_id: str) -> mqtt.Client:
    """A paho 2.x client (VERSION2 callbacks) with protocol, credentials and TLS applied."""
    protocol = mqtt.MQTTv5 if options.protocol == "5" else mqtt.MQTTv311
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        clean_session=None if protocol == mqtt.MQTTv5 else True,
    )
    client.connect_timeout = options.connect_timeout_s
    if options.username is not None:
        client.username_pw_set(options.username, options.password)
    if options.tls.enabled:
        client.tls_set_context(tls_context(options.tls))
        if options.tls.insecure_skip_verify:
            client.tls_insecure_set(True)
    return client


def build_settings_client(settings: UplinkSettings, client_id: str) -> mqtt.Client:
    """:func:`build_client` from the ``uplink`` section (the in-process client factory)."""
    return build_client(ClientOptions.of(settings), client_id)


def tls_context(tls: TlsOptions) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        if tls.cert_file and tls.key_file:
            context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load the TLS files: {exc}",
            where="uplink.tls (ca_file, cert_file, key_file)",
            hint="point them at readable PEM files; the key must match the certificate",
        ) from exc
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True)
class ProbeResult:
    reachable: bool
    detail: str


def probe_broker(settings: UplinkSettings, client_id: str, timeout_s: float) -> ProbeResult:
    """Open one MQTT session (CONNECT → CONNACK) and close it; never raises for network faults."""
    client = build_settings_client(settings, f"{client_id}-probe")
    answered = threading.Event()
    outcome: list[str] = []

    def on_connect(
        _client: mqtt.Client,
        _userdata: object,
        _flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        _properties: object,
    ) -> None:
        outcome.append("" if not reason_code.is_failure else f"refused: {reason_code}")
        answered.set()

    client.on_connect = on_connect
    address = f"{settings.host}:{settings.port}"
    try:
        client.connect(settings.host, settings.port, keepalive=settings.keepalive_s)
    except (OSError, ssl.SSLError) as exc:
        return ProbeResult(False, f"cannot connect to {address}: {exc}")
    client.loop_start()
    try:
        if not answered.wait(timeout_s):
            return ProbeResult(False, f"{address} accepted TCP but sent no CONNACK in {timeout_s}s")
        if outcome[0]:
            return ProbeResult(False, f"{address} {outcome[0]}")
        return ProbeResult(True, f"MQTT {settings.protocol} session opened on {address}")
    finally:
        client.disconnect()
        client.loop_stop()
