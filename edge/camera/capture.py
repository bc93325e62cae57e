"""Reading a camera continuously, surviving unplugging, and handing out frames.

One reader thread owns the OpenCV capture. It keeps the newest frame (so a triggered capture
gets the part in front of the lens *now*, not a frame buffered seconds ago), wakes
:meth:`CameraReader.frames` consumers (stream mode) and :meth:`CameraReader.capture` callers
(part mode). When the device stops delivering (unplugged, driver error, a video file that is
gone or at its end) the reader closes it, says so once, and reopens it every ``reconnect_s``
until it delivers again: a camera that comes back is picked up without a restart.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from edge.errors import DependencyMissingError, MoltbotError
from edge.text_enum import TextEnum
from edge.triggers.video import PixelFrame

logger = logging.getLogger(__name__)


class CameraState(TextEnum):
    STOPPED = "stopped"
    OPENING = "opening"
    STREAMING = "streaming"
    LOST = "lost"


class FrameReader(Protocol):
    def read(self) -> NDArray[np.uint8] | None: ...  # RGB, or None when it stopped delivering
    def close(self) -> None: ...


@dataclass(frozen=True)
class CameraSpec:
    device: str  # a resolved path (or a video file)
    width: int | None
    height: int | None
    fps: float


class OpenCvReader:
    """cv2.VideoCapture on V4L2 (or on a file, paced at ``fps`` like a camera)."""

    def __init__(self, spec: CameraSpec) -> None:
        cv2 = _cv2()
        self._cv2 = cv2
        self._is_file = Path(spec.device).is_file()
        backend = cv2.CAP_ANY if self._is_file else cv2.CAP_V4L2
        self._capture = cv2.VideoCapture(spec.device, backend)
        if not self._capture.isOpened():
            self._capture.release()
            raise MoltbotError(
                f"cannot open camera {spec.device}",
                where="camera.device",
                hint="is it plugged in, and is the service user in the 'video' group?",
            )
        if not self._is_file:
            if spec.width and spec.height:
                self._capture.set(cv2.CAP_PROP_FRAME_WIDTH, spec.width)
                self._capture.set(cv2.CAP_PROP_FRAME_HEIGHT, spec.height)
            self._capture.set(cv2.CAP_PROP_FPS, spec.fps)
            self._capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._period_s = 1.0 / spec.fps if self._is_file else 0.0
        self._next_at = time.monotonic()

    def read(self) -> NDArray[np.uint8] | None:
        if self._period_s:
            delay = self._next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._next_at = max(self._next_at + self._period_s, time.monotonic())
        ok, frame = self._capture.read()
        if not ok or frame is None:
            return None
        return np.asarray(self._cv2.cvtColor(frame, self._cv2.COLOR_BGR2RGB), dtype=np.uint8)

    def close(self) -> None:
        self._capture.release()


def _cv2() -> Any:
    try:
        return importlib.import_module("cv2")
    except ImportError as exc:
        raise DependencyMissingError(
            "cameras need OpenCV",
            where="cv2",
            hint="pip install 'moltbot-edge[camera]' (opencv-python-headless)",
        ) from exc


ReaderFactory = Callable[[CameraSpec], FrameReader]


class CameraReader:
    def __init__(
        self,
        spec: CameraSpec,
        *,
        reconnect_s: float = 2.0,
        reader_factory: ReaderFactory = OpenCvReader,
    ) -> None:
        self.spec = spec
        self.reconnect_s = reconnect_s
        self._factory = reader_factory
        self.state = CameraState.STOPPED
        self.last_error: str | None = None
        self.frames_total = 0
        self.reconnects_total = 0
        self._latest: tuple[int, float, NDArray[np.uint8]] | None = None  # (number, at, pixels)
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return Path(self.spec.device).name

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="camera", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        self.state = CameraState.STOPPED

    def _run(self) -> None:
        while not self._stop.is_set():
            self.state = CameraState.OPENING
            try:
                reader = self._factory(self.spec)
            except MoltbotError as exc:
                self._lost(exc.what)
                continue
            try:
                self._stream(reader)
            finally:
                reader.close()
            if not self._stop.is_set():
                self._lost(f"camera {self.spec.device} stopped delivering frames")

    def _stream(self, reader: FrameReader) -> None:
        while not self._stop.is_set():
            pixels = reader.read()
            if pixels is None:
                return
            if self.state != CameraState.STREAMING:
                if self.last_error is not None:
                    self.reconnects_total += 1
                    logger.info("camera %s is back", self.spec.device)
                self.state, self.last_error = CameraState.STREAMING, None
            with self._changed:
                self.frames_total += 1
                self._latest = (self.frames_total, time.monotonic(), pixels)
                self._changed.notify_all()

    def _lost(self, reason: str) -> None:
        if reason != self.last_error:
            logger.warning("%s; retrying every %.1f s", reason, self.reconnect_s)
        self.state, self.last_error = CameraState.LOST, reason
        self._stop.wait(self.reconnect_s)

    def frames(self, stop: threading.Event, every_nth: int = 1) -> Iterator[PixelFrame]:
        """Stream mode: each new frame (frames that arrive while one is processed are skipped)."""
        seen = 0
        while not stop.is_set() and not self._stop.is_set():
            with self._changed:
                self._changed.wait_for(partial(self._ready, seen, stop), timeout=0.5)
                latest = self._latest
            if latest is None or latest[0] <= seen:
                continue
            seen = latest[0]
            if seen % every_nth == 0:
                yield PixelFrame(f"{self.name}#{seen}", latest[2])

    def _ready(self, seen: int, stop: threading.Event) -> bool:
        newer = self._latest is not None and self._latest[0] > seen
        return newer or stop.is_set() or self._stop.is_set()

    def capture(self, timeout_s: float) -> PixelFrame:
        """Part mode: the first frame that starts arriving after this call."""
        asked_at = time.monotonic()
        with self._changed:
            arrived = self._changed.wait_for(
                lambda: self._latest is not None and self._latest[1] > asked_at,
                timeout=timeout_s,
            )
            latest = self._latest
        if not arrived or latest is None:
            raise MoltbotError(
                f"camera {self.spec.device} delivered no frame within {timeout_s:.1f} s "
                f"({self.state.value}{': ' + self.last_error if self.last_error else ''})",
                where="camera.device",
                hint="check the cable and `moltbot doctor`; the capture was not made",
            )
        return PixelFrame(f"{self.name}#{latest[0]}", latest[2])
