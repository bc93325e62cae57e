"""Frame sources. A watched folder: cameras or line PCs drop image files into it.

A file is taken once its size has stayed the same for one poll (so half-written files are not
read); after inference it moves to ``done/``, or to ``rejected/`` when it is not an image, so the
folder never grows without bound and no frame is processed twice.
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


@dataclass(frozen=True)
class Frame:
    reference: str  # what the defect event names as the frame
    data: bytes
    path: Path


class WatchedFolder:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._sizes: dict[Path, int] = {}
        for sub in (DONE, REJECTED):
            (folder / sub).mkdir(parents=True, exist_ok=True)

    def poll(self) -> Iterator[Frame]:
        """Frames whose files are complete, oldest first."""
        sizes: dict[Path, int] = {}
        candidates = sorted(
            (p for p in self.folder.iterdir() if is_image_file(p)),
            key=lambda p: (p.stat().st_mtime, p.name),
        )
        for path in candidates:
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            sizes[path] = size
            if self._sizes.get(path) == size and size > 0:
                yield Frame(reference=path.name, data=path.read_bytes(), path=path)
                sizes.pop(path)
        self._sizes = sizes

    def finish(self, frame: Frame, *, rejected: bool = False) -> None:
        target = self.folder / (REJECTED if rejected else DONE) / frame.path.name
        try:
            shutil.move(str(frame.path), str(target))
        except OSError as exc:
            logger.error("cannot move %s to %s: %s", frame.path, target.parent, exc)
