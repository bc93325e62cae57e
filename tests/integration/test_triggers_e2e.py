"""Frames dropped into a watched folder become defect events on a real MQTT subscriber."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from edge.triggers.pipeline import TriggerPipeline
from edge.triggers.sources import WatchedFolder
from tests.conftest import ConfigFactory
from tests.integration.uplink_rig import collecting, open_outbox, running_uplink, wait_until
from tests.support.models import serving_defect_model, write_frames
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration


def test_frames_in_the_watched_folder_reach_the_broker_as_defect_events(
    make_config: ConfigFactory, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    watch = tmp_path / "incoming"
    watch.mkdir()
    config = make_config(
        triggers={
            "watch_dir": str(watch),
            "debounce_hits": 1,
            "debounce_window": 1,
            "cooldown_s": 0,
        },
        inference={"precision": "fp32"},
    )
    frames = write_frames(tmp_path / "frames", per_label=3, seed=11)
    service = serving_defect_model(config)
    outbox = open_outbox(config)
    pipeline = TriggerPipeline(config.triggers, service, outbox)
    stop = threading.Event()
    worker = threading.Thread(target=pipeline.run_folder, args=(WatchedFolder(watch), stop))
    with collecting(mosquitto) as consumer, running_uplink(config, outbox):
        worker.start()
        try:
            for label, paths in frames.items():
                for path in paths:
                    shutil.copy(path, watch / f"{label}-{path.name}")
            (watch / "garbage.png").write_text("not an image")
            wait_until(lambda: len(consumer.events()) >= 9, 30, "9 defect events")
            rejected = watch / "rejected" / "garbage.png"
            wait_until(rejected.exists, 10, "the bad file to be rejected")
        finally:
            stop.set()
            worker.join()
    events = [m.json() for m in consumer.events()]
    assert all(m.topic == "moltbot/test-site/test-device/defect" for m in consumer.events())
    by_frame = {e["data"]["frame"]: e["data"]["class"] for e in events}
    assert by_frame == {
        f"{label}-{p.name}": label
        for label, paths in frames.items()
        if label != "ok"
        for p in paths
    }
    assert events[0]["data"]["model"] == "defect@1"
    assert sorted(p.name for p in (watch / "done").iterdir()) == sorted(
        f"{label}-{p.name}" for label, paths in frames.items() for p in paths
    )
    outbox.close()
