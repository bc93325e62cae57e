"""Crashes and full disks: real processes killed with SIGKILL, a real size-limited file system."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.errors import OutboxFullError
from tests.conftest import ConfigFactory
from tests.integration.uplink_rig import (
    collecting,
    first_occurrences,
    open_outbox,
    running_uplink,
    wait_until,
)
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration

PUT_FOREVER = """
import sys
from edge.config import load_config
from edge.outbox.store import Outbox
outbox = Outbox.from_config(load_config().config, has_rtc=True)
n = 0
while True:
    message = outbox.put("defect", {"n": n})
    sys.stdout.write(message.id + "\\n")
    sys.stdout.flush()
    n += 1
"""


def environment(data_dir: Path, broker: MosquittoBroker) -> dict[str, str]:
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


def test_every_put_that_returned_survives_sigkill(
    data_dir: Path, mosquitto: MosquittoBroker, make_config: ConfigFactory
) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", PUT_FOREVER],
        stdout=subprocess.PIPE,
        text=True,
        env=environment(data_dir, mosquitto),
    )
    assert writer.stdout is not None
    confirmed = [writer.stdout.readline().strip() for _ in range(300)]
    writer.send_signal(signal.SIGKILL)
    writer.wait(10)
    writer.stdout.close()
    outbox = open_outbox(make_config())
    stored = [m.id for m in outbox.peek(100_000)]
    assert stored[: len(confirmed)] == confirmed  # every confirmed put, in order
    outbox.close()


def test_uplink_process_killed_mid_drain_loses_nothing(
    data_dir: Path, mosquitto: MosquittoBroker, make_config: ConfigFactory
) -> None:
    outbox = open_outbox(make_config())
    put_ids = [outbox.put("telemetry", {"n": n, "pad": "y" * 200}).id for n in range(4000)]
    outbox.close()
    drain = [sys.executable, "-m", "edge.cli", "outbox", "drain", "--once", "--timeout", "120"]
    env = environment(data_dir, mosquitto)
    with collecting(mosquitto) as consumer:
        first = subprocess.Popen(drain, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_until(lambda: len(consumer.events()) >= 400, 60, "the drain to get going")
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
        killed_at = len(consumer.events())
        assert consumer.wait_for(  # the broker publishes the dead uplink's last will
            lambda ms: any(m.payload == b"offline" for m in ms), 10
        )
        second = subprocess.run(
            drain, env=env, capture_output=True, text=True, timeout=180, check=False
        )
        assert second.returncode == 0, second.stderr
        assert consumer.wait_for_ids(set(put_ids), 30)
        received = consumer.event_ids()
    assert killed_at < len(put_ids)  # it really died mid-drain
    assert first_occurrences(received) == put_ids
    assert "0 left in the outbox" in second.stdout


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root; the cap tests cover eviction")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({result.stderr.strip()}); the cap tests cover eviction"
        )
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_disk_refuses_the_newest_message_and_the_rest_keep_syncing(
    tiny_filesystem: Path, make_config: ConfigFactory, mosquitto: MosquittoBroker
) -> None:
    config = make_config(device={"data_dir": str(tiny_filesystem)}, cache={"max_bytes": 1 << 40})
    outbox = open_outbox(config)
    stored: list[str] = []
    with pytest.raises(OutboxFullError, match="disk is full") as refused:
        for n in range(100_000):
            stored.append(outbox.put("defect", {"n": n, "pad": "z" * 2000}).id)
    assert "free space on the data partition" in (refused.value.hint or "")
    assert outbox.stats().refused_total == 1
    assert [m.id for m in outbox.peek(len(stored) + 1)] == stored  # nothing stored was lost
    with collecting(mosquitto) as consumer, running_uplink(config, outbox) as uplink:
        assert consumer.wait_for_ids(set(stored), 60)
        wait_until(lambda: len(outbox) == 0, 60, "the deletes to go through")
        del uplink
    after = outbox.put("defect", {"n": "after"})  # room again once the backlog is synced
    assert outbox.get(after.seq) is not None
    outbox.close()


def test_kill_timing_is_not_needed_for_ordering(make_config: ConfigFactory) -> None:
    """A second process appending while another reads keeps one global order."""
    config = make_config()
    first, second = open_outbox(config), open_outbox(config)
    ids = []
    for n in range(20):
        ids.append((first if n % 2 else second).put("voice", {"n": n}).id)
        time.sleep(0)
    assert [m.id for m in first.peek(50)] == ids
    first.close()
    second.close()
