"""systemd notify/watchdog from a real ``moltbot run``, and in-process restarts with backoff."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from edge.service import Appliance
from tests.conftest import ConfigFactory
from tests.integration.test_run_process import environment
from tests.support.models import installed_registry
from tests.support.mosquitto import MosquittoBroker, free_port

pytestmark = pytest.mark.integration


def test_notify_ready_then_watchdog_then_stopping(
    data_dir: Path, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    installed_registry(data_dir / "models")
    notify_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(str(notify_path))
        server.settimeout(60)
        env = environment(data_dir, mosquitto, free_port()) | {
            "NOTIFY_SOCKET": str(notify_path),
            "WATCHDOG_USEC": "400000",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            messages: list[str] = []
            while not any("WATCHDOG=1" in m for m in messages):
                messages.append(server.recv(4096).decode())
            process.send_signal(signal.SIGTERM)
            while not any("STOPPING=1" in m for m in messages):
                messages.append(server.recv(4096).decode())
            assert process.wait(30) == 0
        finally:
            if process.poll() is None:
                process.kill()
    ready = next(i for i, m in enumerate(messages) if "READY=1" in m)
    first_ping = next(i for i, m in enumerate(messages) if "WATCHDOG=1" in m)
    assert ready < first_ping


def test_a_failing_service_is_restarted_with_backoff_and_reported(
    make_config: ConfigFactory,
) -> None:
    config = make_config(inference={"precision": "fp32"})
    installed_registry(config.paths().model_dir)
    appliance = Appliance(config)
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise OSError("camera unplugged")
        appliance._stop.wait()  # healthy from the third start on

    async def scenario() -> None:
        task = asyncio.create_task(appliance._supervise("triggers", flaky))
        while len(calls) < 3:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)
        health = appliance.health["triggers"]
        assert (health.running, health.restarts) == (True, 2)
        assert health.last_error == "camera unplugged"
        appliance._stop.set()
        await task

    asyncio.run(asyncio.wait_for(scenario(), 30))
    metrics = appliance.metrics.render().decode()
    assert 'moltbot_service_restarts_total{service="triggers"} 2.0' in metrics
    appliance.outbox.close()
