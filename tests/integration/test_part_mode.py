"""Part mode with the default trigger settings: every defective part is one event, with its id.

The bug this pins (issue 19): with 2-of-3 debounce and a 5 s cooldown applied to uploads, the
first cracked part was never reported and a second one within 5 s was swallowed.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from edge.api.app import create_app
from edge.service import Appliance
from edge.triggers.pipeline import TriggerPipeline
from edge.triggers.sources import WatchedFolder
from tests.conftest import ConfigFactory
from tests.integration.uplink_rig import open_outbox, wait_until
from tests.support.models import installed_registry, serving_defect_model, write_frames

pytestmark = pytest.mark.integration
TOKEN = "t0ken-for-part-mode"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def appliance(make_config: ConfigFactory) -> Iterator[Appliance]:
    """Default trigger settings: only the token and a fixed precision are set."""
    config = make_config(api={"token": TOKEN}, inference={"precision": "fp32"})
    installed_registry(config.paths().model_dir)
    built = Appliance(config)
    built.load_model()
    yield built
    built.outbox.close()


def test_every_uploaded_defective_part_is_an_event_carrying_its_part_id(
    appliance: Appliance, tmp_path: Path
) -> None:
    frames = write_frames(tmp_path / "frames", per_label=4, seed=21)
    client = TestClient(create_app(appliance), raise_server_exceptions=False)
    sent = [("crack", 0), ("crack", 1), ("ok", 0), ("crack", 2), ("spot", 0), ("crack", 3)]
    answered = []
    for n, (label, index) in enumerate(sent):
        response = client.post(
            f"/v1/infer?trigger=true&part_id=P-{n:04d}",
            content=frames[label][index].read_bytes(),
            headers=AUTH | {"Content-Type": "image/png"},
        )
        assert response.status_code == 200, response.text
        answered.append(response.json()["events"])
    assert [len(ids) for ids in answered] == [1, 1, 0, 1, 1, 1]
    events = [m.payload for m in appliance.outbox.peek(20)]
    assert [(e["part_id"], e["class"], e["mode"]) for e in events] == [
        ("P-0000", "crack", "part"),
        ("P-0001", "crack", "part"),
        ("P-0003", "crack", "part"),
        ("P-0004", "spot", "part"),
        ("P-0005", "crack", "part"),
    ]
    assert "debounce" not in events[0]
    assert appliance.snapshot().decisions_total == {"crack": 4, "spot": 1}


def test_an_upload_without_a_part_id_gets_one_and_a_bad_part_id_is_refused(
    appliance: Appliance, tmp_path: Path
) -> None:
    crack = write_frames(tmp_path / "frames", per_label=1, seed=5)["crack"][0].read_bytes()
    client = TestClient(create_app(appliance), raise_server_exceptions=False)
    headers = AUTH | {"Content-Type": "image/png"}
    assert client.post("/v1/infer?trigger=true", content=crack, headers=headers).status_code == 200
    (event,) = [m.payload for m in appliance.outbox.peek(5)]
    assert event["part_id"].startswith("upload-")
    refused = client.post("/v1/infer?trigger=true&part_id=a%20b", content=crack, headers=headers)
    assert refused.status_code == 422
    assert "part_id" in refused.json()["error"]


def test_watched_folder_parts_in_a_row_each_become_an_event_named_by_the_file(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    watch = tmp_path / "incoming"
    watch.mkdir()
    config = make_config(triggers={"watch_dir": str(watch)}, inference={"precision": "fp32"})
    assert config.triggers.folder_mode == "part"
    frames = write_frames(tmp_path / "frames", per_label=5, seed=9)
    outbox = open_outbox(config)
    pipeline = TriggerPipeline(config.triggers, serving_defect_model(config), outbox)
    for n, path in enumerate(frames["scratch"]):
        shutil.copy(path, watch / f"SN{n:05d}.png")
    stop = threading.Event()
    worker = threading.Thread(
        target=pipeline.run_folder, args=(WatchedFolder(watch), stop), kwargs={"mode": "part"}
    )
    worker.start()
    try:
        wait_until(lambda: len(outbox) >= 5, 30, "5 defect events")
    finally:
        stop.set()
        worker.join()
    events = [m.payload for m in outbox.peek(10)]
    assert sorted(e["part_id"] for e in events) == [f"SN{n:05d}" for n in range(5)]
    assert {e["class"] for e in events} == {"scratch"}
    outbox.close()


def test_stream_mode_on_the_same_frames_still_debounces_and_cools_down(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config(inference={"precision": "fp32"})  # 2-of-3, 5 s cooldown
    frames = write_frames(tmp_path / "frames", per_label=4, seed=21)
    outbox = open_outbox(config)
    pipeline = TriggerPipeline(
        config.triggers, serving_defect_model(config), outbox, clock=lambda: 100.0
    )
    queued = [
        pipeline.process(path.read_bytes(), path.name, mode="stream", source="line")[1]
        for path in frames["crack"]
    ]
    assert [len(ids) for ids in queued] == [0, 1, 0, 0]  # debounced, then cooling down
    assert outbox.peek(5)[0].payload["debounce"] == "2/2"
    outbox.close()
