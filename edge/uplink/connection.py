"""Building a configured paho client, and a one-shot reachability probe.

Every paho client in the runtime is made here, so protocol version, TLS, credentials and the
client id are applied the same way by the uplink, ``moltbot doctor`` and the tests.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge.config.model import UplinkSettings
from edge.errors import ConfigError


def build_client(settings: UplinkSettings, client_id: str) -> mqtt.Client:
    """A paho 2.x client (VERSION2 callbacks) with protocol, credentials and TLS applied."""
    protocol = mqtt.MQTTv5 if settings.protocol == "5" else mqtt.MQTTv311
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        clean_session=None if protocol == mqtt.MQTTv5 else True,
    )
    client.connect_timeout = settings.connect_timeout_s
    if settings.username is not None:
        password = settings.password.get_secret_value() if settings.password else None
        client.username_pw_set(settings.username, password)
    if settings.tls.enabled:
        client.tls_set_context(tls_context(settings))
        if settings.tls.insecure_skip_verify:
            client.tls_insecure_set(True)
    return client


def tls_context(settings: UplinkSettings) -> ssl.SSLContext:
    tls = settings.tls
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
    client = build_client(settings, f"{client_id}-probe")
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
