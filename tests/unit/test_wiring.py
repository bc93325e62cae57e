"""``edge.wiring``: config → parts, with the device identity created only by what sends."""

from __future__ import annotations

from edge import wiring
from edge.identity import DEVICE_ID_FILE
from tests.conftest import ConfigFactory


def test_reading_the_outbox_never_creates_the_device_id(make_config: ConfigFactory) -> None:
    config = make_config(device={"id": None})
    outbox = wiring.open_outbox(config)
    try:
        outbox.stats()
        outbox.peek(10)
        len(outbox)
    finally:
        outbox.close()
    assert not (config.device.data_dir / DEVICE_ID_FILE).exists()


def test_the_first_queued_message_creates_the_device_id_once(make_config: ConfigFactory) -> None:
    config = make_config(device={"id": None})
    first = wiring.open_outbox(config)
    try:
        message = first.put("defect", {"n": 1})
    finally:
        first.close()
    stored = (config.device.data_dir / DEVICE_ID_FILE).read_text().strip()
    assert message.topic == f"moltbot/test-site/{stored}/defect"
    again = wiring.open_outbox(config)
    try:
        assert again.put("status", {}).topic == f"moltbot/test-site/{stored}/status/report"
    finally:
        again.close()
    assert (config.device.data_dir / DEVICE_ID_FILE).read_text().strip() == stored


def test_a_given_device_id_is_used_and_nothing_is_written(make_config: ConfigFactory) -> None:
    config = make_config(device={"id": None})
    outbox = wiring.open_outbox(config, device="line-3-cam")
    try:
        assert outbox.put("defect", {}).topic == "moltbot/test-site/line-3-cam/defect"
    finally:
        outbox.close()
    assert not (config.device.data_dir / DEVICE_ID_FILE).exists()


def test_topics_follow_the_configured_prefix_and_site(make_config: ConfigFactory) -> None:
    config = make_config(uplink={"topic_prefix": "plant"}, device={"site": "hall-2"})
    topics = wiring.topic_scheme(config)
    assert topics.event("defect") == "plant/hall-2/test-device/defect"
    assert topics.command_filter == "plant/hall-2/test-device/cmd/#"
