"""``moltbot flash IMAGE DEVICE``: write an image to an SD card (or eMMC reader) safely.

Refuses a device that is mounted, the disk that holds ``/``, and one too small for the image
plus room for the data partition to grow. Writes only the mapped blocks when a ``.bmap`` sits
beside the image (bmaptool's format: mapped ranges with their checksums), then reads back what it
wrote and compares. A regular file works as the device, for tests and for staging.
"""

from __future__ import annotations

import hashlib
import os
import stat
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from edge.errors import InputError, MoltbotError

BLOCK = 4096
CHUNK = 4 * 1024 * 1024
MIN_DATA_GROWTH = 512 * 1024 * 1024


class FlashError(MoltbotError):
    """Writing or verifying the device failed."""


@dataclass(frozen=True)
class Target:
    path: Path
    size: int
    is_block_device: bool


def device_size(path: Path) -> int:
    with path.open("rb") as stream:
        return stream.seek(0, os.SEEK_END)


def _base_name(device: Path) -> str:
    return device.resolve().name


def mounted_sources(mounts_file: Path = Path("/proc/mounts")) -> set[str]:
    return {line.split()[0] for line in mounts_file.read_text().splitlines() if line.strip()}


def parent_disk(partition: str, sys_root: Path = Path("/sys/class/block")) -> str:
    """``mmcblk0p2`` → ``mmcblk0``; a whole disk returns itself."""
    entry = sys_root / partition
    if (entry / "partition").exists():
        return (entry.resolve().parent).name
    return partition


def check_target(
    device: Path,
    image_size: int,
    *,
    mounts_file: Path = Path("/proc/mounts"),
    sys_root: Path = Path("/sys/class/block"),
) -> Target:
    if not device.exists():
        raise InputError(
            "device not found",
            where=str(device),
            hint="lsblk lists the disks; an SD card reader shows as /dev/sdX or /dev/mmcblkN",
        )
    is_block = stat.S_ISBLK(device.stat().st_mode)
    size = device_size(device) if is_block else max(device_size(device), 0)
    if is_block:
        name = _base_name(device)
        mounts = mounted_sources(mounts_file)
        root_source = next(
            (
                line.split()[0]
                for line in mounts_file.read_text().splitlines()
                if len(line.split()) > 1 and line.split()[1] == "/"
            ),
            "",
        )
        if (
            root_source.startswith("/dev/")
            and parent_disk(Path(root_source).name, sys_root) == name
        ):
            raise InputError(
                f"{device} holds this computer's root file system",
                where=str(device),
                hint="pick the SD card, not the system disk",
            )
        busy = sorted(
            m
            for m in mounts
            if m.startswith("/dev/") and parent_disk(Path(m).name, sys_root) == name
        )
        if busy:
            raise InputError(
                f"{device} is in use: {', '.join(busy)} mounted",
                where=str(device),
                hint="unmount its partitions first (udisksctl unmount -b …)",
            )
        needed = image_size + MIN_DATA_GROWTH
        if size < needed:
            raise InputError(
                f"{device} has {size / 2**30:.1f} GiB; the image needs {image_size / 2**30:.1f} "
                f"GiB (boot + root + data + models) plus "
                f"{MIN_DATA_GROWTH // 2**20} MiB for the data partition to grow",
                where=str(device),
                hint="use a larger card",
            )
    return Target(device, size, is_block)


def mapped_ranges(image: Path, bmap: Path | None) -> list[tuple[int, int, str | None]]:
    """(first byte, last byte + 1, sha256 or None); without a bmap, the whole image."""
    size = image.stat().st_size
    if bmap is None or not bmap.is_file():
        return [(0, size, None)]
    root = ET.parse(bmap).getroot()  # noqa: S314 - our own bmaptool output
    block = int(root.findtext("BlockSize", str(BLOCK)))
    ranges = []
    for item in root.iter("Range"):
        first, _, last = (item.text or "").strip().partition("-")
        start, end = int(first), int(last or first)
        ranges.append((start * block, min((end + 1) * block, size), item.get("chksum")))
    return ranges


def _chunks(stream_path: Path, start: int, end: int) -> Iterator[bytes]:
    with stream_path.open("rb") as stream:
        stream.seek(start)
        left = end - start
        while left > 0:
            block = stream.read(min(CHUNK, left))
            if not block:
                return
            left -= len(block)
            yield block


def _digest(path: Path, start: int, end: int) -> str:
    digest = hashlib.sha256()
    for block in _chunks(path, start, end):
        digest.update(block)
    return digest.hexdigest()


def write_image(
    image: Path,
    device: Path,
    *,
    bmap: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
    **checks: Path,
) -> int:
    """Write the mapped ranges, fsync, read back and compare; returns bytes written."""
    target = check_target(device, image.stat().st_size, **checks)
    ranges = mapped_ranges(image, bmap)
    total = sum(end - start for start, end, _ in ranges)
    done = 0
    with device.open("r+b") as out:
        if not target.is_block_device:
            out.truncate(image.stat().st_size)  # a file stands in for the card: same size
        for start, end, _ in ranges:
            out.seek(start)
            for block in _chunks(image, start, end):
                out.write(block)
                done += len(block)
                if progress:
                    progress(done, total)
        out.flush()
        os.fsync(out.fileno())
    for start, end, expected in ranges:
        written = _digest(device, start, end)
        source = expected or _digest(image, start, end)
        if written != source:
            raise FlashError(
                f"read-back mismatch at bytes {start}-{end}",
                where=str(device),
                hint="the card may be failing or counterfeit; try another",
            )
    return done
