"""``moltbot run`` as a real process: API on a free port, promtool, schemathesis, SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import pytest

from edge import __version__, wiring
from tests.integration.uplink_rig import collecting, wait_until
from tests.support.models import installed_registry, write_frames
from tests.support.mosquitto import MosquittoBroker, free_port

pytestmark = pytest.mark.integration
TOKEN = "process-test-token"


@dataclass
class RunningAppliance:
    process: subprocess.Popen[str]
    base_url: str
    data_dir: Path
    log: Path

    def get(self, path: str, **kwargs: object) -> httpx.Response:
        return httpx.get(self.base_url + path, timeout=10, **kwargs)  # type: ignore[arg-type]


def environment(data_dir: Path, broker: MosquittoBroker, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLTBOT_")}
    env |= {
        "MOLTBOT_DEVICE__ID": "proc-device",
        "MOLTBOT_DEVICE__SITE": "line-9",
        "MOLTBOT_DEVICE__DATA_DIR": str(data_dir),
        "MOLTBOT_UPLINK__HOST": broker.host,
        "MOLTBOT_UPLINK__PORT": str(broker.port),
        "MOLTBOT_API__HOST": "127.0.0.1",
        "MOLTBOT_API__PORT": str(port),
        "MOLTBOT_API__TOKEN": TOKEN,
        "MOLTBOT_INFERENCE__PRECISION": "fp32",
        "MOLTBOT_TRIGGERS__DEBOUNCE_HITS": "1",
        "MOLTBOT_TRIGGERS__DEBOUNCE_WINDOW": "1",
        "MOLTBOT_TRIGGERS__COOLDOWN_S": "0",
    }
    return env


@pytest.fixture
def appliance(
    data_dir: Path, mosquitto: MosquittoBroker, tmp_path: Path
) -> Iterator[RunningAppliance]:
    installed_registry(data_dir / "models")
    port = free_port()
    log = tmp_path / "appliance.log"
    with log.open("w") as stream:
        process = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run"],
            env=environment(data_dir, mosquitto, port),
            stdout=stream,
            stderr=subprocess.STDOUT,
            text=True,
        )
    running = RunningAppliance(process, f"http://127.0.0.1:{port}", data_dir, log)

    def answers() -> bool:
        try:
            return running.get("/readyz").status_code == 200
        except httpx.TransportError:
            assert process.poll() is None, log.read_text()
            return False

    wait_until(answers, 60, "the appliance to become ready")
    yield running
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def test_health_readiness_and_auth_over_http(appliance: RunningAppliance) -> None:
    assert appliance.get("/healthz").json() == {
        "status": "ok",
        "version": __version__,
        "release": None,
    }
    ready = appliance.get("/readyz").json()
    assert ready["ready"] is True
    assert ready["checks"]["model"] == "defect@1"
    assert appliance.get("/v1/config").status_code == 401
    headers = {"Authorization": f"Bearer {TOKEN}"}
    assert appliance.get("/v1/config", headers=headers).json()["device"]["id"] == "proc-device"


def test_metrics_pass_promtool(appliance: RunningAppliance) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: `make test` installs Debian's prometheus package")
    body = appliance.get("/metrics").text
    assert "moltbot_outbox_depth_messages" in body
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, text=True, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_schemathesis_finds_no_server_error(appliance: RunningAppliance) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{appliance.base_url}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "-H",
            f"Authorization: Bearer {TOKEN}",
            "--request-timeout",
            "20",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_sigterm_under_load_loses_no_accepted_event(
    appliance: RunningAppliance, mosquitto: MosquittoBroker, tmp_path: Path, make_config
) -> None:
    frames = [
        p.read_bytes() for paths in write_frames(tmp_path / "f", 4, seed=5).values() for p in paths
    ]
    accepted: list[str] = []
    refused: list[int] = []
    stop = threading.Event()

    def load() -> None:
        headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/png"}
        with httpx.Client(base_url=appliance.base_url, timeout=10) as client:
            n = 0
            while not stop.is_set():
                try:
                    response = client.post(
                        "/v1/infer?trigger=true", content=frames[n % len(frames)], headers=headers
                    )
                except httpx.TransportError:
                    return  # the server is gone: nothing more was accepted
                n += 1
                if response.status_code == 200:
                    accepted.extend(response.json()["events"])
                else:
                    refused.append(response.status_code)

    with collecting(mosquitto, "moltbot/line-9/#") as consumer:
        workers = [threading.Thread(target=load) for _ in range(3)]
        for worker in workers:
            worker.start()
        wait_until(lambda: len(accepted) >= 60, 60, "accepted events under load")
        appliance.process.send_signal(signal.SIGTERM)
        assert appliance.process.wait(60) == 0, appliance.log.read_text()[-3000:]
        stop.set()
        for worker in workers:
            worker.join()
        time.sleep(0.5)
        delivered = set(consumer.event_ids())
        statuses = [m.payload for m in consumer.messages if m.topic.endswith("/status")]
    config = make_config(
        device={"id": "proc-device", "site": "line-9", "data_dir": str(appliance.data_dir)}
    )
    outbox = wiring.open_outbox(config, has_rtc=True)
    queued = {m.id for m in outbox.peek(100_000)}
    outbox.close()
    assert set(accepted) <= delivered | queued, "an accepted event was lost"
    assert set(refused) <= {503}
    assert statuses[-1] == b"offline"  # the clean stop said so itself
    assert "stopped;" in appliance.log.read_text()


def test_events_stream_live_over_server_sent_events(
    appliance: RunningAppliance, tmp_path: Path
) -> None:
    frame = write_frames(tmp_path / "f", 1, seed=6)["spot"][0].read_bytes()
    headers = {"Authorization": f"Bearer {TOKEN}"}
    received: list[str] = []
    with (
        httpx.Client(base_url=appliance.base_url, timeout=10) as client,
        client.stream(
            "GET", "/v1/events", headers=headers | {"Accept": "text/event-stream"}
        ) as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        posted = client.post(
            "/v1/infer?trigger=true", content=frame, headers=headers | {"Content-Type": "image/png"}
        )
        event_id = posted.json()["events"][0]
        for line in stream.iter_lines():
            received.append(line)
            if line.startswith("data:") and event_id in line:
                break
    data = next(line for line in received if line.startswith("data:") and event_id in line)
    assert '"class": "spot"' in data
