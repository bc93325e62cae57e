"""Frames from a video file or a V4L2 camera, through OpenCV when it is installed.

OpenCV is optional (``pip install 'moltbot-edge[camera]'``); without it these sources refuse
with a message saying how to get it. A camera that stops delivering frames ends the stream with
an error rather than hanging.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.errors import DependencyMissingError, InputError


@dataclass(frozen=True)
class PixelFrame:
    reference: str
    pixels: NDArray[np.uint8]


def _cv2() -> Any:
    try:
        return importlib.import_module("cv2")
    except ImportError as exc:
        raise DependencyMissingError(
            "reading video files and cameras needs OpenCV",
            where="cv2",
            hint="pip install 'moltbot-edge[camera]' (opencv-python-headless)",
        ) from exc


def video_frames(
    source: Path | int, *, every_nth: int = 1, max_frames: int | None = None
) -> Iterator[PixelFrame]:
    """Frames of a video file (or camera index), RGB, every ``every_nth`` one."""
    cv2 = _cv2()
    capture = cv2.VideoCapture(str(source) if isinstance(source, Path) else source)
    if not capture.isOpened():
        raise InputError(
            f"cannot open {'video file' if isinstance(source, Path) else 'camera'} {source}",
            where=str(source),
            hint="check the path and codec (MJPEG/H.264 in AVI/MP4), or the /dev/video index",
        )
    name = source.name if isinstance(source, Path) else f"camera{source}"
    try:
        index = produced = 0
        while max_frames is None or produced < max_frames:
            ok, frame = capture.read()
            if not ok:
                return
            if index % every_nth == 0:
                rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                yield PixelFrame(f"{name}#{index}", np.asarray(rgb, dtype=np.uint8))
                produced += 1
            index += 1
    finally:
        capture.release()
