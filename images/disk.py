"""Disk images without loop devices or mounts: sfdisk writes the table, mkfs.vfat + mtools build
the FAT boot partition, ``mke2fs -d`` builds ext4 partitions from folders, and each partition
image is copied into place. MBR, 1 MiB aligned, disk id derived from the recipe so PARTUUIDs are
stable across builds.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from images.run import run

MIB = 1024 * 1024
SECTOR = 512
ALIGN_MIB = 4


@dataclass(frozen=True)
class Partition:
    name: str  # boot, root, data
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


def plan_layout(seed: str, boot_mib: int, root_mib: int, data_mib: int) -> DiskLayout:
    """Pure: where each partition goes; the disk id comes from ``seed`` (the recipe hash)."""
    disk_id = int(uuid.uuid5(uuid.NAMESPACE_URL, f"moltbot-disk:{seed}").hex[:8], 16) or 1
    start = ALIGN_MIB
    partitions = []
    for name, size, kind, label in (
        ("boot", boot_mib, "vfat", "BOOT"),
        ("root", root_mib, "ext4", "rootfs"),
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
    """The partition table, then each partition image copied to its offset."""
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
            out.seek(part.start_mib * MIB)
            with partition_images[part.name].open("rb") as source:
                while block := source.read(8 * MIB):
                    out.write(block)


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
