"""A camera feeding the trigger pipeline: continuously (stream mode) or on a capture trigger.

In part mode a capture is asked for by the ``capture`` command (MQTT ``…/cmd/capture`` with
``{"part_id": "SN-1"}``, or Sparkplug DCMD ``Command/capture``): the next frame is run through
the model as one part, and its defect event carries the part id.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from edge.camera.capture import CameraReader, CameraSpec
from edge.camera.devices import resolve_device
from edge.config.model import CameraSettings
from edge.triggers.parts import validate_part_id
from edge.triggers.pipeline import TriggerPipeline


class CameraInspection:
    def __init__(
        self,
        settings: CameraSettings,
        pipeline: TriggerPipeline,
        reader: CameraReader,
        lock: threading.Lock | None = None,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.reader = reader
        self._lock = lock or threading.Lock()

    @classmethod
    def from_settings(
        cls, settings: CameraSettings, pipeline: TriggerPipeline, lock: threading.Lock | None
    ) -> CameraInspection:
        spec = CameraSpec(
            resolve_device(settings.device), settings.width, settings.height, settings.fps
        )
        return cls(settings, pipeline, CameraReader(spec, reconnect_s=settings.reconnect_s), lock)

    def run(self, stop: threading.Event) -> None:
        """Until ``stop``: stream frames through the pipeline, or keep the camera warm."""
        self.reader.start()
        try:
            if self.settings.mode == "stream":
                frames = self.reader.frames(stop, self.settings.every_nth)
                self.pipeline.run_stream(frames, stop, mode="stream", source="camera")
            else:
                stop.wait()
        finally:
            self.reader.stop()

    def capture(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """One triggered capture = one part; the reply names the events it queued."""
        given = arguments.get("part_id")
        part_id = (
            validate_part_id(str(given), "capture.part_id")
            if given is not None
            else f"capture-{time.time_ns()}"
        )
        frame = self.reader.capture(self.settings.capture_timeout_s)
        with self._lock:
            prediction, events = self.pipeline.process_pixels(
                frame.pixels, frame.reference, mode="part", part_id=part_id, source="camera"
            )
        return {
            "part_id": part_id,
            "frame": frame.reference,
            "label": prediction.label,
            "score": round(prediction.score, 5),
            "events": events,
        }
