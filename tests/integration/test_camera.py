"""The camera path (reader thread, reconnects, stream and triggered part capture) on a video file.

No V4L2 camera exists here: ``camera.device`` pointing at a video file goes through the same
reader (OpenCV's VideoCapture, paced at ``camera.fps``), and removing the file stands in for
unplugging the camera.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from edge.camera.capture import CameraReader, CameraSpec, CameraState
from edge.camera.inspection import CameraInspection
from edge.config import MoltbotConfig
from edge.errors import MoltbotError
from edge.outbox.store import Outbox
from edge.service import Appliance
from edge.triggers.pipeline import TriggerPipeline
from tests.conftest import ConfigFactory
from tests.integration.test_video_source import write_video
from tests.integration.uplink_rig import collecting, open_outbox, wait_until
from tests.support.models import installed_registry, serving_defect_model
from tests.support.mosquitto import MosquittoBroker

pytest.importorskip("cv2", reason="OpenCV (the camera extra) is not installed")
pytestmark = pytest.mark.integration


@pytest.fixture
def rig(make_config: ConfigFactory) -> Iterator[tuple[MoltbotConfig, TriggerPipeline, Outbox]]:
    config = make_config(inference={"precision": "fp32"})
    outbox = open_outbox(config)
    yield config, TriggerPipeline(config.triggers, serving_defect_model(config), outbox), outbox
    outbox.close()


def inspection(
    config: MoltbotConfig, pipeline: TriggerPipeline, video: Path, **camera: object
) -> CameraInspection:
    settings = config.camera.model_copy(update={"device": str(video), "fps": 100.0, **camera})
    reader = CameraReader(CameraSpec(str(video), None, None, 100.0), reconnect_s=0.1)
    return CameraInspection(settings, pipeline, reader)


@contextmanager
def running(camera: CameraInspection) -> Iterator[threading.Event]:
    stop = threading.Event()
    worker = threading.Thread(target=camera.run, args=(stop,))
    worker.start()
    try:
        yield stop
    finally:
        stop.set()
        worker.join(10)


def test_stream_mode_runs_camera_frames_through_debounce(
    rig: tuple[MoltbotConfig, TriggerPipeline, Outbox], tmp_path: Path
) -> None:
    config, pipeline, outbox = rig
    video = tmp_path / "line.avi"
    write_video(video, ["ok", "ok", "crack", "crack", "crack", "ok"])
    camera = inspection(config, pipeline, video, mode="stream")
    with running(camera):
        wait_until(lambda: len(outbox) >= 1, 10, "a defect event from the camera")
    event = outbox.peek(1)[0].payload
    assert (event["class"], event["mode"]) == ("crack", "stream")
    assert event["debounce"].startswith("2/")  # 2-of-3 by default
    assert event["frame"].startswith("line.avi#")


def test_each_triggered_capture_is_one_part_with_its_id(
    rig: tuple[MoltbotConfig, TriggerPipeline, Outbox], tmp_path: Path
) -> None:
    config, pipeline, outbox = rig
    video = tmp_path / "cracks.avi"
    write_video(video, ["crack"] * 8)
    camera = inspection(config, pipeline, video, mode="part")
    with running(camera):
        wait_until(lambda: camera.reader.state == CameraState.STREAMING, 10, "the camera")
        replies = [camera.capture({"part_id": f"SN-{n}"}) for n in range(4)]
    assert [(r["part_id"], r["label"], len(r["events"])) for r in replies] == [
        (f"SN-{n}", "crack", 1) for n in range(4)
    ]
    assert [m.payload["part_id"] for m in outbox.peek(10)] == [f"SN-{n}" for n in range(4)]
    assert pipeline.frames_total == 4  # part mode runs only the captured frames


def test_a_camera_that_disappears_is_picked_up_again_when_it_returns(
    rig: tuple[MoltbotConfig, TriggerPipeline, Outbox], tmp_path: Path
) -> None:
    config, pipeline, outbox = rig
    video = tmp_path / "cam.avi"
    write_video(video, ["crack"] * 30)
    camera = inspection(config, pipeline, video, mode="part", capture_timeout_s=0.5)
    with running(camera):
        wait_until(lambda: camera.reader.state == CameraState.STREAMING, 10, "the camera")
        video.rename(tmp_path / "unplugged.avi")
        wait_until(lambda: camera.reader.state == CameraState.LOST, 10, "the camera to be lost")
        with pytest.raises(MoltbotError, match="delivered no frame"):
            camera.capture({"part_id": "SN-lost"})
        (tmp_path / "unplugged.avi").rename(video)
        wait_until(lambda: camera.reader.state == CameraState.STREAMING, 10, "the camera back")
        reply = camera.capture({"part_id": "SN-back"})
    assert camera.reader.reconnects_total >= 1
    assert reply["events"] and outbox.peek(1)[0].payload["part_id"] == "SN-back"


def replies(consumer: Any) -> list[dict[str, Any]]:
    return [
        m.json()["data"]["reply"]
        for m in consumer.events()
        if m.topic.endswith("/status/report") and "reply" in m.json()["data"]
    ]


def pinged(consumer: Any, topic: str) -> bool:
    if any(reply.get("pong") for reply in replies(consumer)):
        return True
    consumer.client.publish(topic, b"{}", qos=1)
    time.sleep(0.2)
    return False


def test_an_mqtt_capture_command_on_the_appliance_inspects_one_part(
    make_config: ConfigFactory, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    video = tmp_path / "cam.avi"
    write_video(video, ["crack"] * 8)
    config = make_config(
        inference={"precision": "fp32"},
        camera={"enabled": True, "device": str(video), "mode": "part", "fps": 100},
    )
    installed_registry(config.paths().model_dir)
    appliance = Appliance(config)
    appliance.load_model()
    assert appliance.camera is not None and appliance.uplink is not None
    stop = threading.Event()
    worker = threading.Thread(target=appliance.camera.run, args=(stop,))
    worker.start()
    appliance.uplink.start()
    try:
        with collecting(mosquitto) as consumer:
            assert appliance.uplink.wait_connected(10)
            wait_until(lambda: appliance.camera.reader.state == CameraState.STREAMING, 10, "camera")
            commands = "moltbot/test-site/test-device/cmd"
            # The uplink subscribes right after CONNACK: a pong proves the command path is live.
            wait_until(lambda: pinged(consumer, f"{commands}/ping"), 10, "a pong")
            consumer.client.publish(f"{commands}/capture", b'{"part_id": "PLC-77"}', qos=1)
            wait_until(
                lambda: (
                    any("part_id" in r for r in replies(consumer))
                    and any(m.topic.endswith("/defect") for m in consumer.events())
                ),
                10,
                "the defect and the reply",
            )
    finally:
        stop.set()
        worker.join(10)
        appliance.uplink.stop()
        appliance.outbox.close()
    [defect] = [m.json()["data"] for m in consumer.events() if m.topic.endswith("/defect")]
    assert defect["part_id"] == "PLC-77"  # one capture, one part
    assert [r["part_id"] for r in replies(consumer) if "part_id" in r] == ["PLC-77"]


def test_an_http_capture_inspects_one_part_and_without_a_camera_says_how_to_add_one(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from edge.api.app import create_app

    video = tmp_path / "cam.avi"
    write_video(video, ["spot"] * 8)
    token = {"Authorization": "Bearer capture-test-token-0123456789"}
    config = make_config(
        api={"token": token["Authorization"].split()[1]},
        inference={"precision": "fp32"},
        camera={"enabled": True, "device": str(video), "mode": "part", "fps": 100},
    )
    installed_registry(config.paths().model_dir)
    appliance = Appliance(config)
    appliance.load_model()
    assert appliance.camera is not None
    client = TestClient(create_app(appliance), raise_server_exceptions=False)
    stop = threading.Event()
    worker = threading.Thread(target=appliance.camera.run, args=(stop,))
    worker.start()
    try:
        wait_until(lambda: appliance.camera.reader.state == CameraState.STREAMING, 10, "camera")
        answer = client.post("/v1/capture?part_id=SN-9", headers=token)
        assert answer.status_code == 200, answer.text
        assert (answer.json()["part_id"], answer.json()["label"]) == ("SN-9", "spot")
        assert len(answer.json()["events"]) == 1
        assert client.post("/v1/capture?part_id=a%20b", headers=token).status_code == 422
        assert client.post("/v1/capture").status_code == 401
    finally:
        stop.set()
        worker.join(10)
    events = [m.payload for m in appliance.outbox.peek(5)]
    assert [(e["part_id"], e["class"]) for e in events] == [("SN-9", "spot")]
    appliance.outbox.close()

    appliance.camera = None  # the same API on an appliance without a camera
    refused = client.post("/v1/capture", headers=token)
    assert refused.status_code == 409
    assert refused.json()["where"] == "camera.enabled"
