"""The local API in-process (FastAPI TestClient) on a real appliance: model, outbox, registry."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from edge import __version__
from edge.api.app import create_app
from edge.service import Appliance
from tests.conftest import ConfigFactory
from tests.integration.test_voice import KOREAN_INTENTS
from tests.support.models import copy_version, installed_registry, write_frames
from tests.support.speech import KOREAN_MODEL, speak

pytestmark = pytest.mark.integration
TOKEN = "t0ken-for-tests-only"


@pytest.fixture
def appliance(make_config: ConfigFactory) -> Iterator[Appliance]:
    config = make_config(
        api={"token": TOKEN, "max_upload_bytes": 256 * 1024},
        voice={
            "enabled": True,
            "microphone": False,
            "model_dir": str(KOREAN_MODEL),
            "intents": KOREAN_INTENTS,
        },
        triggers={"debounce_hits": 1, "debounce_window": 1, "cooldown_s": 0},
        inference={"precision": "fp32"},
    )
    installed_registry(config.paths().model_dir)
    built = Appliance(config)
    built.load_model()
    yield built
    built.outbox.close()


@pytest.fixture
def client(appliance: Appliance) -> TestClient:
    return TestClient(create_app(appliance), raise_server_exceptions=False)


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def png(tmp_path: Path, label: str) -> bytes:
    return write_frames(tmp_path / "frames", per_label=1, seed=3)[label][0].read_bytes()


def test_health_and_readiness_are_open(client: TestClient) -> None:
    assert client.get("/healthz").json() == {
        "status": "ok",
        "version": __version__,
        "release": None,
    }
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["model"] == "defect@1"


def test_readiness_is_503_with_reasons_while_shutting_down(
    client: TestClient, appliance: Appliance
) -> None:
    appliance.accepting = False
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["service"] == "shutting down"
    assert client.get("/v1/config", headers=AUTH).status_code == 503


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}]
)
def test_everything_else_needs_the_token(client: TestClient, headers: dict[str, str]) -> None:
    for path in ("/v1/config", "/v1/outbox", "/v1/models", "/v1/events"):
        response = client.get(path, headers=headers)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/metrics").status_code == 200  # open unless metrics_require_token


def test_infer_classifies_and_triggers_a_defect_event(
    client: TestClient, tmp_path: Path, appliance: Appliance
) -> None:
    body = png(tmp_path, "scratch")
    response = client.post(
        "/v1/infer?trigger=true", content=body, headers=AUTH | {"Content-Type": "image/png"}
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["label"], result["model"]) == ("scratch", "defect@1")
    assert len(result["events"]) == 1
    queued = appliance.outbox.peek(5)
    assert [m.id for m in queued] == result["events"]
    events = client.get("/v1/events", headers=AUTH).json()["events"]
    assert events[-1]["data"]["class"] == "scratch"
    metrics = client.get("/metrics").text
    assert 'moltbot_decisions_total{class="scratch"} 1.0' in metrics
    assert "moltbot_inference_latency_seconds_count" in metrics
    assert "process_resident_memory_bytes" in metrics


def test_upload_limits_and_content_types(client: TestClient, tmp_path: Path) -> None:
    image = Image.new("L", (600, 600))
    image.frombytes(bytes(range(256)) * 1406 + bytes(64))
    big = io.BytesIO()
    image.save(big, format="BMP")
    too_big = client.post(
        "/v1/infer", content=big.getvalue(), headers=AUTH | {"Content-Type": "image/bmp"}
    )
    assert too_big.status_code == 413
    assert "max_upload_bytes" in too_big.json()["error"]
    wrong_type = client.post(
        "/v1/infer", content=b"{}", headers=AUTH | {"Content-Type": "application/json"}
    )
    assert wrong_type.status_code == 415
    not_an_image = client.post(
        "/v1/infer", content=b"GIF89a-not-really", headers=AUTH | {"Content-Type": "image/png"}
    )
    assert not_an_image.status_code == 422
    assert "not a readable image" in not_an_image.json()["error"]
    empty = client.post("/v1/infer", content=b"", headers=AUTH | {"Content-Type": "image/png"})
    assert empty.status_code == 422


def test_model_activation_rollback_and_their_errors(
    client: TestClient, appliance: Appliance
) -> None:
    copy_version(appliance.config.paths().model_dir, "2")
    assert (
        client.post("/v1/models/defect/activate", json={"version": "2"}, headers=AUTH).json()[
            "model"
        ]
        == "defect@2"
    )
    assert client.post("/v1/models/defect/rollback", headers=AUTH).json()["model"] == "defect@1"
    missing = client.post("/v1/models/defect/activate", json={"version": "7"}, headers=AUTH)
    assert missing.status_code == 422
    assert "installed versions: 1, 2" in missing.json()["hint"]
    bad_body = client.post("/v1/models/defect/activate", json={"version": "../x"}, headers=AUTH)
    assert bad_body.status_code == 422
    assert "body.version" in bad_body.json()["error"]
    assert "defect@1" in client.get("/v1/models", headers=AUTH).text


def test_config_is_redacted_and_outbox_is_reported(client: TestClient) -> None:
    config = client.get("/v1/config", headers=AUTH).json()
    assert config["api"]["token"] == "**********"
    assert TOKEN not in client.get("/v1/config", headers=AUTH).text
    outbox = client.get("/v1/outbox?peek=3", headers=AUTH).json()
    assert outbox["stats"]["depth"] == 0
    assert client.get("/v1/outbox?peek=1000", headers=AUTH).status_code == 422


def test_openapi_documents_every_route(client: TestClient) -> None:
    paths = set(client.get("/openapi.json").json()["paths"])
    assert {
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/infer",
        "/v1/outbox",
        "/v1/models",
        "/v1/models/{name}/activate",
        "/v1/models/{name}/rollback",
        "/v1/config",
        "/v1/events",
    } <= paths


def test_asr_upload_recognises_acts_and_publishes(
    client: TestClient, tmp_path: Path, appliance: Appliance
) -> None:
    assert appliance.pipeline is not None
    wav = speak("검사 중지", tmp_path / "stop.wav").read_bytes()
    response = client.post("/v1/asr", content=wav, headers=AUTH | {"Content-Type": "audio/wav"})
    assert response.status_code == 200, response.text
    [utterance] = response.json()["utterances"]
    assert (utterance["text"], utterance["intent"]) == ("검사 중지", "stop")
    assert utterance["result"] == {"ok": True, "inspecting": False}
    assert not appliance.pipeline.running.is_set()
    assert [m.kind for m in appliance.outbox.peek(5)] == ["voice"]
    assert "moltbot_asr_latency_seconds_count 1.0" in client.get("/metrics").text
    refused = client.post(
        "/v1/asr", content=b"RIFF....WAVEfmt garbage", headers=AUTH | {"Content-Type": "audio/wav"}
    )
    assert refused.status_code == 422
    assert (
        client.post(
            "/v1/asr", content=wav, headers=AUTH | {"Content-Type": "audio/mpeg"}
        ).status_code
        == 415
    )
