"""Building an outbox + uplink pointed at the test broker, and waiting on it."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edge import wiring
from edge.config import MoltbotConfig
from edge.outbox.store import Outbox
from edge.uplink.sync import Uplink
from tests.support.collector import Collector
from tests.support.mosquitto import MosquittoBroker

FAST_RECONNECT = {"reconnect_min_s": 2.0, "reconnect_max_s": 3.0, "connect_timeout_s": 3.0}


def open_outbox(config: MoltbotConfig) -> Outbox:
    return wiring.open_outbox(config, has_rtc=True)


@contextmanager
def running_uplink(config: MoltbotConfig, outbox: Outbox) -> Iterator[Uplink]:
    uplink = Uplink(outbox, config.uplink, wiring.topic_scheme(config))
    uplink.start()
    try:
        yield uplink
    finally:
        uplink.stop()


@contextmanager
def collecting(
    broker: MosquittoBroker,
    topic_filter: str = "moltbot/#",
    *,
    client_id: str | None = None,
    persistent: bool = False,
) -> Iterator[Collector]:
    collector = Collector(
        broker.host,
        broker.port,
        topic_filter,
        client_id=client_id or f"collector-{time.monotonic_ns()}",
        persistent=persistent,
    )
    try:
        yield collector
    finally:
        collector.close()


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def first_occurrences(ids: list[str]) -> list[str]:
    seen: set[str] = set()
    ordered = []
    for message_id in ids:
        if message_id not in seen:
            seen.add(message_id)
            ordered.append(message_id)
    return ordered


def environment(data_dir: Path, broker: MosquittoBroker) -> dict[str, str]:
    """Variables for a runtime process of its own, pointed at ``data_dir`` and the broker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLTBOT_")}
    env.update(
        {
            "MOLTBOT_DEVICE__ID": "test-device",
            "MOLTBOT_DEVICE__SITE": "test-site",
            "MOLTBOT_DEVICE__DATA_DIR": str(data_dir),
            "MOLTBOT_UPLINK__HOST": broker.host,
            "MOLTBOT_UPLINK__PORT": str(broker.port),
        }
    )
    return env
