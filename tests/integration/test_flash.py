"""``moltbot flash``: bmap-aware write with read-back, and the refusals that protect a host.

A regular file stands in for the SD card (no block device exists here); the block-device
refusals run check_target against a made-up /proc/mounts and /sys/class/block layout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge.errors import InputError
from images.flash import check_target, mapped_ranges, parent_disk, write_image

pytestmark = pytest.mark.image


def sparse_image(path: Path) -> Path:
    with path.open("wb") as stream:
        stream.truncate(32 * 1024 * 1024)
        stream.seek(1024 * 1024)
        stream.write(b"boot sector stand-in" * 100)
        stream.seek(20 * 1024 * 1024)
        stream.write(os.urandom(70_000))
    return path


def test_flash_with_bmap_writes_mapped_blocks_and_verifies(tmp_path: Path) -> None:
    image = sparse_image(tmp_path / "a.img")
    bmap = tmp_path / "a.img.bmap"
    subprocess.run(
        ["bmaptool", "create", "-o", str(bmap), str(image)], check=True, capture_output=True
    )
    ranges = mapped_ranges(image, bmap)
    assert 0 < sum(end - start for start, end, _ in ranges) < image.stat().st_size
    card = tmp_path / "card.bin"
    card.touch()
    written = write_image(image, card, bmap=bmap)
    assert written == sum(end - start for start, end, _ in ranges)
    assert card.read_bytes() == image.read_bytes()


def test_cli_flash_asks_first_and_copies_without_bmap(tmp_path: Path) -> None:
    image = sparse_image(tmp_path / "b.img")
    card = tmp_path / "card.bin"
    card.touch()
    command = [sys.executable, "-m", "edge.cli", "flash", str(image), str(card)]
    refused = subprocess.run(command, input="n\n", capture_output=True, text=True, check=False)
    assert refused.returncode == 1
    assert card.stat().st_size == 0
    done = subprocess.run([*command, "--yes"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "verified" in done.stdout
    assert card.read_bytes() == image.read_bytes()


@pytest.fixture
def fake_system(tmp_path: Path) -> tuple[Path, Path]:
    """/proc/mounts says / is on sda2 and mmcblk0p1 is mounted; sysfs knows their parents."""
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/sda2 / ext4 rw 0 0\n/dev/mmcblk0p1 /media/boot vfat rw 0 0\n")
    sys_root = tmp_path / "sys"
    for disk, parts in (
        ("sda", ["sda1", "sda2"]),
        ("mmcblk0", ["mmcblk0p1"]),
        ("mmcblk1", ["mmcblk1p1"]),
    ):
        (sys_root / "devices" / disk).mkdir(parents=True)
        (sys_root / disk).symlink_to(sys_root / "devices" / disk)
        for part in parts:
            (sys_root / "devices" / disk / part).mkdir()
            (sys_root / "devices" / disk / part / "partition").write_text("1\n")
            (sys_root / part).symlink_to(sys_root / "devices" / disk / part)
    return mounts, sys_root


def test_partition_names_map_to_their_disk(fake_system: tuple[Path, Path]) -> None:
    _, sys_root = fake_system
    assert parent_disk("mmcblk0p1", sys_root) == "mmcblk0"
    assert parent_disk("sda", sys_root) == "sda"


def test_missing_device_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="device not found"):
        check_target(tmp_path / "nope", 1024)


def test_block_device_refusals_use_mounts_and_sysfs(
    fake_system: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No block device exists here: /dev/null stands in, reported as an 8 GiB disk whose
    kernel name the test chooses; mounts and sysfs are the fake ones above."""
    import images.flash as flash_module

    mounts, sys_root = fake_system
    monkeypatch.setattr(flash_module.stat, "S_ISBLK", lambda _mode: True)
    monkeypatch.setattr(flash_module, "device_size", lambda _path: 8 * 2**30)

    def as_disk(name: str) -> None:
        monkeypatch.setattr(flash_module, "_base_name", lambda _device: name)

    card = Path("/dev/null")
    as_disk("mmcblk0")
    with pytest.raises(InputError, match="in use: /dev/mmcblk0p1 mounted"):
        check_target(card, 1, mounts_file=mounts, sys_root=sys_root)
    as_disk("sda")
    with pytest.raises(InputError, match="root file system"):
        check_target(card, 1, mounts_file=mounts, sys_root=sys_root)
    as_disk("mmcblk1")
    with pytest.raises(InputError, match=r"the image needs 9\.0 GiB"):
        check_target(card, 9 * 2**30, mounts_file=mounts, sys_root=sys_root)
    assert check_target(card, 2**30, mounts_file=mounts, sys_root=sys_root).size == 8 * 2**30
