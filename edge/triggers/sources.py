"""Frame sources. A watched folder: cameras or line PCs drop image files into it.

A file is taken once its size has stayed the same for one poll (so half-written files are not
read); after inference it moves to ``done/``, or to ``rejected/`` when it cannot be used (not
an image, too large, a link out of the folder, or its processing failed), with a
``<name>.reason`` file beside it saying why — so the folder never grows without bound, no frame
is processed twice, and one bad file never stops the frames after it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edge.inference.sources_images import is_image_file

logger = logging.getLogger(__name__)
DONE, REJECTED = "done", "rejected"
REASON_SUFFIX = ".reason"
MAX_FRAME_BYTES = 64 * 1024 * 1024  # far above any camera frame; never read a bigger file


@dataclass(frozen=True)
class Frame:
    reference: str  # what the defect event names as the frame
    data: bytes
    path: Path


class WatchedFolder:
    def __init__(self, folder: Path, *, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self.folder = folder
        self.max_frame_bytes = max_frame_bytes
        self.rejected_total = 0
        self._sizes: dict[Path, int] = {}
        for sub in (DONE, REJECTED):
            (folder / sub).mkdir(parents=True, exist_ok=True)

    def poll(self) -> Iterator[Frame]:
        """Frames whose files are complete, oldest first."""
        sizes: dict[Path, int] = {}
        for path, size in self._candidates():
            sizes[path] = size
            if self._sizes.get(path) != size or size == 0:
                continue
            sizes.pop(path)
            frame = self._read(path, size)
            if frame is not None:
                yield frame
        self._sizes = sizes

    def _candidates(self) -> list[tuple[Path, int]]:
        """(path, size) of the image files, oldest first; files that vanish are skipped."""
        found = []
        for path in self.folder.iterdir():
            try:
                if not is_image_file(path) and not path.is_symlink():
                    continue
                stat = path.lstat()
            except OSError:  # removed or replaced between listing and stat
                continue
            found.append((stat.st_mtime, path.name, path, stat.st_size))
        return [(path, size) for _, _, path, size in sorted(found)]

    def _read(self, path: Path, size: int) -> Frame | None:
        frame = Frame(reference=path.name, data=b"", path=path)
        if path.is_symlink():
            self.finish(frame, rejected=True, reason="a symbolic link: frames must be files")
            return None
        if size > self.max_frame_bytes:
            self.finish(
                frame,
                rejected=True,
                reason=f"{size} bytes, over the frame size limit of {self.max_frame_bytes} bytes",
            )
            return None
        try:
            return Frame(reference=path.name, data=path.read_bytes(), path=path)
        except OSError as exc:
            logger.warning("cannot read frame %s: %s; trying again at the next poll", path, exc)
            return None

    def finish(self, frame: Frame, *, rejected: bool = False, reason: str | None = None) -> None:
        """Move a frame to ``done/``, or to ``rejected/`` with ``<name>.reason`` beside it."""
        target = self.folder / (REJECTED if rejected else DONE) / frame.path.name
        if rejected:
            self.rejected_total += 1
            logger.warning("rejected frame %s: %s", frame.reference, reason or "no reason given")
        try:
            shutil.move(str(frame.path), str(target))
            if rejected:
                target.with_name(target.name + REASON_SUFFIX).write_text(
                    (reason or "rejected") + "\n"
                )
        except OSError as exc:
            logger.error("cannot move %s to %s: %s", frame.path, target.parent, exc)
