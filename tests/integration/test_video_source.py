"""Frames from a video file (written with OpenCV at test time) through the trigger pipeline."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from edge.errors import InputError
from edge.triggers.pipeline import TriggerPipeline
from edge.triggers.video import video_frames
from models.defect.dataset import make_image
from tests.conftest import ConfigFactory
from tests.integration.uplink_rig import open_outbox
from tests.support.models import serving_defect_model

cv2 = pytest.importorskip("cv2", reason="OpenCV (the camera extra) is not installed")
pytestmark = pytest.mark.integration


def write_video(path: Path, labels: list[str]) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 64))
    rng = np.random.default_rng(8)
    for label in labels:
        gray = make_image(label, rng)
        writer.write(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    writer.release()


def test_video_frames_become_defect_events(make_config: ConfigFactory, tmp_path: Path) -> None:
    video = tmp_path / "line.avi"
    write_video(video, ["ok", "ok", "crack", "crack", "ok", "spot", "spot", "ok"])
    config = make_config(
        inference={"precision": "fp32"},
        triggers={"debounce_hits": 2, "debounce_window": 2, "cooldown_s": 0},
    )
    service = serving_defect_model(config)
    outbox = open_outbox(config)
    pipeline = TriggerPipeline(config.triggers, service, outbox)
    processed = pipeline.run_stream(video_frames(video), threading.Event())
    assert processed == 8
    events = [m.payload for m in outbox.peek(10)]
    assert [(e["class"], e["frame"]) for e in events] == [
        ("crack", "line.avi#3"),
        ("spot", "line.avi#6"),
    ]
    outbox.close()


def test_every_nth_frame_and_a_missing_file(tmp_path: Path) -> None:
    video = tmp_path / "short.avi"
    write_video(video, ["ok"] * 6)
    assert [f.reference for f in video_frames(video, every_nth=2)] == [
        "short.avi#0",
        "short.avi#2",
        "short.avi#4",
    ]
    with pytest.raises(InputError, match="cannot open video file"):
        list(video_frames(tmp_path / "missing.avi"))


def test_a_frame_that_fails_is_skipped_and_the_stream_goes_on(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    from edge.triggers.video import PixelFrame

    video = tmp_path / "line.avi"
    write_video(video, ["crack", "crack", "ok"])
    config = make_config(
        inference={"precision": "fp32"},
        triggers={"debounce_hits": 2, "debounce_window": 2, "cooldown_s": 0},
    )
    pipeline = TriggerPipeline(config.triggers, serving_defect_model(config), open_outbox(config))
    broken = PixelFrame(reference="broken#0", pixels=np.zeros((0, 7, 5), dtype=np.uint8))
    frames = [broken, *video_frames(video), broken]
    assert pipeline.run_stream(frames, threading.Event()) == 5
    assert pipeline.stream_frames_failed_total == 2
    events = [m.payload for m in pipeline.outbox.peek(10)]
    assert [(e["class"], e["frame"]) for e in events] == [("crack", "line.avi#1")]
    pipeline.outbox.close()
