"""Crashes and full disks: real processes killed with SIGKILL, a real size-limited file system."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from edge.errors import OutboxFullError
from tests.conftest import ConfigFactory
from tests.integration.uplink_rig import (
    collecting,
    environment,
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
from edge.wiring import open_outbox
outbox = open_outbox(load_config().config, has_rtc=True)
n = 0
while True:
    message = outbox.put("defect", {"n": n})
    sys.stdout.write(message.id + "\\n")
    sys.stdout.flush()
    n += 1
"""


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


@contextmanager
def size_limited_filesystem(mount_point: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` (root only; skips the test elsewhere)."""
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root; the cap tests cover eviction")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({result.stderr.strip()}); the cap tests cover eviction"
        )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    with size_limited_filesystem(tmp_path / "tiny", "3m") as mount_point:
        yield mount_point


def fill_disk(folder: Path) -> None:
    """Write a file until the file system holding ``folder`` has no byte left."""
    with (folder / "filler").open("wb", buffering=0) as filler:
        for chunk in (1 << 16, 4096, 512, 1):
            try:
                while True:
                    filler.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    assert shutil.disk_usage(folder).free < 4096


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


def test_default_cap_is_reached_before_a_small_disk_fills(
    tmp_path: Path, make_config: ConfigFactory
) -> None:
    """Issue 13.6: the cap counts SQLite's pages, its write-ahead log and the space reserve, so
    on an 8 MB partition a telemetry flood meets the (default, 4 MB) cap, not a full disk, and
    a defect event evicts telemetry instead of being refused."""
    with size_limited_filesystem(tmp_path / "small", "8m") as partition:
        outbox = open_outbox(make_config(device={"data_dir": str(partition)}))
        assert outbox.max_bytes == 4 << 20
        for n in range(1300):  # 10 MB of telemetry, never refused
            outbox.put("telemetry", {"n": n, "pad": "t" * 8000})
        defects = [outbox.put("defect", {"n": n, "pad": "d" * 8000}).id for n in range(40)]
        stats = outbox.stats()
        assert stats.refused_total == 0
        assert stats.dropped_total > 0
        assert stats.disk_bytes <= outbox.max_bytes + (256 << 10)  # + one transaction's WAL
        assert shutil.disk_usage(partition).free > 2 << 20
        assert set(defects) <= {m.id for m in outbox.peek(10_000)}
        outbox.close()


def test_a_full_disk_at_start_still_opens_drains_and_recovers(
    tiny_filesystem: Path, make_config: ConfigFactory, mosquitto: MosquittoBroker
) -> None:
    """Issue 13.6: rebooted with the data partition full, `moltbot outbox stats`, `outbox drain
    --once` and the appliance itself start (the space reserve is given back at open), the
    backlog drains and new events are accepted again."""
    config = make_config(device={"data_dir": str(tiny_filesystem)}, cache={"max_bytes": 1 << 40})
    outbox = open_outbox(config)
    stored: list[str] = []
    with pytest.raises(OutboxFullError):
        for n in range(100_000):
            stored.append(outbox.put("defect", {"n": n, "pad": "z" * 2000}).id)
    outbox.close()
    fill_disk(tiny_filesystem)  # whatever space was left, something else took it
    env = environment(tiny_filesystem, mosquitto) | {"MOLTBOT_CACHE__MAX_BYTES": str(1 << 40)}
    moltbot = [sys.executable, "-m", "edge.cli"]
    stats = subprocess.run(
        [*moltbot, "outbox", "stats", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert stats.returncode == 0, stats.stderr
    assert f'"depth": {len(stored)}' in stats.stdout
    with collecting(mosquitto) as consumer:
        drained = subprocess.run(
            [*moltbot, "outbox", "drain", "--once", "--timeout", "60"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert drained.returncode == 0, drained.stderr
        assert consumer.wait_for_ids(set(stored), 30)
    assert "0 left in the outbox" in drained.stdout
    appliance_outbox = open_outbox(config)  # what `moltbot run` opens first
    after = appliance_outbox.put("defect", {"n": "after the drain"})
    assert [m.id for m in appliance_outbox.peek(10)] == [after.id]
    appliance_outbox.close()
