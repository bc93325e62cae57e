"""``moltbot image build --verify-reproducible``: build twice, in different folders, and compare.

Same recipe, same commit (so the same SOURCE_DATE_EPOCH), same cached root file system: the two
images must have the same sha256. When they do not, the report names where they part: the first
partition tree whose content hash differs and, inside it, the first file that differs and how
(content, mode, owner, link target, present in one only); or, when every tree matches, the first
differing byte of the disk and the partition that holds it.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from edge.files import sha256_file
from images.build import BuildReport, build_image
from images.disk import read_table

logger = logging.getLogger(__name__)
SECTOR = 512
TREES = ("boot", "root", "data")


@dataclass(frozen=True)
class ReproducibilityReport:
    images: tuple[Path, Path]
    sha256: tuple[str, str]
    first_difference: str | None  # None: byte-identical

    @property
    def identical(self) -> bool:
        return self.first_difference is None


def verify_reproducible(recipe: Path, out_dir: Path, cache_dir: Path) -> ReproducibilityReport:
    """Two builds of ``recipe`` whose staged trees live in different folders, compared."""
    reports: list[BuildReport] = []
    works = [out_dir / "first" / "work", out_dir / "second" / "elsewhere" / "work"]
    for index, work in enumerate(works):
        shutil.rmtree(work, ignore_errors=True)
        logger.info("build %d of 2 (staged in %s)", index + 1, work)
        reports.append(
            build_image(
                recipe,
                work.parent,
                cache_dir,
                compress=False,
                bundle=False,  # a signature carries its time: the images are compared
                work_dir=work,
                keep_work=True,
            )
        )
    try:
        first, second = reports
        sums = (sha256_file(first.image), sha256_file(second.image))
        difference = None
        if sums[0] != sums[1]:
            difference = first_tree_difference(works[0], works[1], first, second) or (
                first_byte_difference(first.image, second.image)
            )
        return ReproducibilityReport((first.image, second.image), sums, difference)
    finally:
        for work in works:
            shutil.rmtree(work, ignore_errors=True)


def first_tree_difference(
    one: Path, two: Path, first: BuildReport, second: BuildReport
) -> str | None:
    for name in TREES:
        if first.tree_sha256.get(name) == second.tree_sha256.get(name):
            continue
        found = first_file_difference(one / name, two / name)
        return f"the {name} partition's files differ: {found or 'in their order or times'}"
    return None


def first_file_difference(one: Path, two: Path) -> str | None:
    """The first path (sorted walk) whose type, mode, owner, content or target differ."""
    for current, dirs, files in os.walk(one):
        dirs.sort()
        here = Path(current).relative_to(one)
        other_dir = two / here
        names = sorted([*dirs, *files])
        other_names = sorted(os.listdir(other_dir)) if other_dir.is_dir() else []
        for name in sorted(set(names) ^ set(other_names)):
            side = "first" if name in names else "second"
            return f"{here / name}: only in the {side} build"
        for name in names:
            found = _entry_difference(Path(current) / name, other_dir / name)
            if found:
                return f"{here / name}: {found}"
    return None


def _entry_difference(a: Path, b: Path) -> str | None:
    sa, sb = a.lstat(), b.lstat()
    if stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode):
        return "a different kind of file"
    if stat.S_IMODE(sa.st_mode) != stat.S_IMODE(sb.st_mode):
        return f"mode {stat.S_IMODE(sa.st_mode):o} vs {stat.S_IMODE(sb.st_mode):o}"
    if (sa.st_uid, sa.st_gid) != (sb.st_uid, sb.st_gid):
        return f"owner {sa.st_uid}:{sa.st_gid} vs {sb.st_uid}:{sb.st_gid}"
    if stat.S_ISLNK(sa.st_mode) and os.readlink(a) != os.readlink(b):
        return f"link to {os.readlink(a)} vs {os.readlink(b)}"
    if stat.S_ISREG(sa.st_mode) and sha256_file(a) != sha256_file(b):
        return f"content ({sa.st_size} vs {sb.st_size} bytes)"
    if int(sa.st_mtime) != int(sb.st_mtime):
        return f"mtime {int(sa.st_mtime)} vs {int(sb.st_mtime)}"
    return None


def first_byte_difference(one: Path, two: Path, block: int = 1 << 20) -> str:
    with one.open("rb") as a, two.open("rb") as b:
        offset = 0
        while True:
            x, y = a.read(block), b.read(block)
            if x != y:
                at = offset + next(
                    (i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q),
                    min(len(x), len(y)),
                )
                return f"the disks differ first at byte {at} ({_partition_at(one, at)})"
            if not x:
                return "the disks differ in length"
            offset += len(x)


def _partition_at(disk: Path, offset: int) -> str:
    partitions = read_table(disk)["partitions"]
    for index, (entry, name) in enumerate(zip(partitions, TREES, strict=False)):  # type: ignore[call-overload]
        start, size = entry["start"] * SECTOR, entry["size"] * SECTOR
        if start <= offset < start + size:
            return f"partition {index + 1} ({name}), {offset - start} bytes in"
    return "outside every partition: the partition table or the gaps"
