"""The files an update leaves for the next boot: what root writes stays the appliance's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge.update.records import (
    BootVerdict,
    PendingUpdate,
    read_boot_verdict,
    read_pending,
    remove_pending,
    write_boot_verdict,
    write_pending,
)

APPLIANCE_UID = 4321  # the data dir's owner (systemd's StateDirectory= gives it to moltbot)
PENDING = PendingUpdate("rootfs.0", "rootfs.1", "2.0.0", "ab" * 32, "2026-12-05T04:29:31Z", "b-1")
VERDICT = BootVerdict("rootfs.1", "B", "mark-good", "all 3 checks passed", "b-2", "now")


def test_both_files_round_trip(tmp_path: Path) -> None:
    updates = tmp_path / "updates"
    write_pending(updates, PENDING)
    write_boot_verdict(updates, VERDICT)
    assert read_pending(updates) == PENDING
    assert read_boot_verdict(updates) == VERDICT
    remove_pending(updates)
    assert read_pending(updates) is None
    remove_pending(updates)  # twice: nothing to remove is fine


@pytest.mark.skipif(os.geteuid() != 0, reason="only root writes files for another user")
def test_what_root_writes_belongs_to_the_data_dir_s_owner(tmp_path: Path) -> None:
    """confirm-boot runs as root at every boot; the appliance must still write bundles into the
    folder and remove pending.json from it."""
    data = tmp_path / "data"
    data.mkdir()
    os.chown(data, APPLIANCE_UID, APPLIANCE_UID)
    updates = data / "updates"
    write_boot_verdict(updates, VERDICT)
    write_pending(updates, PENDING)
    for path in (updates, updates / "last-boot.json", updates / "pending.json"):
        assert (path.stat().st_uid, path.stat().st_gid) == (APPLIANCE_UID, APPLIANCE_UID), path
