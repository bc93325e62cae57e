"""Disk images without loop devices or mounts: sfdisk writes the table, mkfs.vfat + mtools build
the FAT boot partition, ``mke2fs -d`` builds ext4 partitions from folders, and each partition
image is copied into place, its holes kept (the disk image stays sparse). MBR, 1 MiB aligned,
disk id derived from the recipe so PARTUUIDs are stable across builds.
"""

from __future__ import annotations

import errno
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from images.run import run

MIB = 1024 * 1024
SECTOR = 512
ALIGN_MIB = 4


@dataclass(frozen=True)
class Partition:
    name: str  # boot, root (slot A), root_b (slot B), data
    size_mib: int
    kind: str  # vfat or ext4
    label: str
    start_mib: int = 0

    @property
    def mbr_type(self) -> str:
        return "c" if self.kind == "vfat" else "83"


@dataclass(frozen=True)
class DiskLayout:
    disk_id: int
    partitions: tuple[Partition, ...]

    @property
    def size_mib(self) -> int:
        last = self.partitions[-1]
        return last.start_mib + last.size_mib + 1

    def partuuid(self, name: str) -> str:
        index = next(i for i, p in enumerate(self.partitions, 1) if p.name == name)
        return f"{self.disk_id:08x}-{index:02d}"

    def partition(self, name: str) -> Partition:
        return next(p for p in self.partitions if p.name == name)


def plan_layout(
    seed: str, boot_mib: int, root_mib: int, data_mib: int, *, root_slots: int = 2
) -> DiskLayout:
    """Pure: where each partition goes; the disk id comes from ``seed`` (the recipe hash).

    p1 boot (FAT), p2 root slot A, p3 root slot B (``root_slots=2``: RAUC installs updates into
    the slot not running; the image ships B empty), then data, last, so first boot can grow it.
    """
    disk_id = int(uuid.uuid5(uuid.NAMESPACE_URL, f"moltbot-disk:{seed}").hex[:8], 16) or 1
    start = ALIGN_MIB
    partitions = []
    slots = [("root", root_mib, "ext4", "rootfs")]
    if root_slots == 2:
        slots.append(("root_b", root_mib, "ext4", "rootfs_b"))
    for name, size, kind, label in (
        ("boot", boot_mib, "vfat", "BOOT"),
        *slots,
        ("data", data_mib, "ext4", "data"),
    ):
        if size <= 0:
            continue
        partitions.append(Partition(name, size, kind, label, start))
        start += _aligned(size)
    return DiskLayout(disk_id, tuple(partitions))


def _aligned(size_mib: int) -> int:
    return -(-size_mib // ALIGN_MIB) * ALIGN_MIB


def filesystem_uuid(seed: str, name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"moltbot-fs:{seed}:{name}"))


def build_vfat(image: Path, partition: Partition, content: Path, seed: str) -> None:
    image.unlink(missing_ok=True)
    volume_id = filesystem_uuid(seed, partition.name).replace("-", "")[:8]
    run(
        [
            "mkfs.vfat",
            "-F",
            "32",
            "-n",
            partition.label,
            "-i",
            volume_id,
            "-C",
            image,
            str(partition.size_mib * 1024),
        ],
        step="format the boot partition",
    )
    entries = sorted(content.iterdir())
    if entries:
        run(["mcopy", "-s", "-p", "-m", "-i", image, *entries, "::"], step="copy the boot files")


def build_ext4(image: Path, partition: Partition, content: Path, seed: str, epoch: int) -> None:
    image.unlink(missing_ok=True)
    run(
        [
            "mke2fs",
            "-q",
            "-t",
            "ext4",
            "-L",
            partition.label,
            "-U",
            filesystem_uuid(seed, partition.name),
            "-E",
            f"root_owner=0:0,hash_seed={filesystem_uuid(seed, 'hash-' + partition.name)}",
            "-d",
            content,
            image,
            f"{partition.size_mib}M",
        ],
        step=f"build the {partition.name} file system",
        input_text=None,
    )
    del epoch  # mke2fs takes SOURCE_DATE_EPOCH from the environment


def assemble(disk: Path, layout: DiskLayout, partition_images: dict[str, Path]) -> None:
    """The partition table, then each partition image copied to its offset (a partition with
    no image stays a hole: zeros)."""
    disk.unlink(missing_ok=True)
    with disk.open("wb") as stream:
        stream.truncate(layout.size_mib * MIB)
    script = ["label: dos", f"label-id: 0x{layout.disk_id:08x}", "unit: sectors", ""]
    for part in layout.partitions:
        script.append(
            f"start={part.start_mib * MIB // SECTOR}, "
            f"size={part.size_mib * MIB // SECTOR}, type={part.mbr_type}"
            + (", bootable" if part.name == "boot" else "")
        )
    run(
        ["sfdisk", "--no-reread", "--no-tell-kernel", disk],
        step="write the partition table",
        input_text="\n".join(script) + "\n",
    )
    with disk.open("r+b") as out:
        for part in layout.partitions:
            if part.name in partition_images:  # root_b ships empty: RAUC fills it
                copy_data_ranges(partition_images[part.name], out.fileno(), part.start_mib * MIB)


def data_ranges(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """The (offset, length) runs of a file that hold data: its holes are skipped (SEEK_DATA /
    SEEK_HOLE), so what mke2fs left unwritten stays unwritten in the disk image."""
    offset = 0
    while offset < size:
        try:
            start = os.lseek(fd, offset, os.SEEK_DATA)
        except OSError as exc:  # ENXIO: nothing but a hole up to the end
            if exc.errno == errno.ENXIO:
                return
            raise
        end = os.lseek(fd, start, os.SEEK_HOLE)
        yield start, end - start
        offset = end


def copy_data_ranges(source: Path, out_fd: int, at: int) -> None:
    """Copy ``source`` into ``out_fd`` at byte offset ``at``, data runs only: the disk image
    stays sparse (a 3 GiB image with 1 GiB of files takes 1 GiB on disk), and bmaptool then maps
    only the blocks that hold something."""
    with source.open("rb") as stream:
        fd = stream.fileno()
        for start, length in data_ranges(fd, os.fstat(fd).st_size):
            _copy_range(fd, out_fd, start, length, at + start)


# copy_file_range refuses some pairs of file systems (EXDEV) and some file systems outright.
_NO_COPY_FILE_RANGE = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}


def _copy_range(in_fd: int, out_fd: int, start: int, length: int, to: int) -> None:
    done = 0
    while done < length:
        try:
            copied = os.copy_file_range(in_fd, out_fd, length - done, start + done, to + done)
        except OSError as exc:
            if exc.errno not in _NO_COPY_FILE_RANGE:
                raise
            block = os.pread(in_fd, min(8 * MIB, length - done), start + done)
            copied = os.pwrite(out_fd, block, to + done) if block else 0
        if copied == 0:
            raise OSError(errno.EIO, f"short copy at byte {start + done} of a partition image")
        done += copied


def read_table(disk: Path) -> dict[str, object]:
    table: dict[str, object] = json.loads(
        run(["sfdisk", "-J", disk], step="read the partition table")
    )["partitiontable"]
    return table


def fat_offset(disk: Path) -> int:
    """Byte offset of the first FAT partition (for ``mtools -i disk@@offset``)."""
    table = read_table(disk)
    for entry in table["partitions"]:  # type: ignore[attr-defined]
        if entry["type"] in ("c", "b", "e"):
            return int(entry["start"]) * SECTOR
    raise LookupError(f"{disk} has no FAT partition")
