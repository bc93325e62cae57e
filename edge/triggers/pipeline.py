"""Frames → inference → decision → defect events in the outbox."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.config.model import TriggerSettings
from edge.errors import InvalidImageError, MoltbotError
from edge.inference.preprocess import decode_image
from edge.inference.service import InferenceService, Prediction
from edge.outbox.store import Outbox
from edge.triggers.decision import DefectDecision, TriggerDecider
from edge.triggers.sources import Frame, WatchedFolder
from edge.triggers.video import PixelFrame

logger = logging.getLogger(__name__)
POLL_S = 0.2


def decider_for(
    settings: TriggerSettings, model_thresholds: dict[str, float], ok_label: str
) -> TriggerDecider:
    return TriggerDecider(
        ok_label=ok_label,
        thresholds=model_thresholds | settings.class_thresholds,
        default_threshold=settings.default_threshold,
        hits_needed=settings.debounce_hits,
        window=settings.debounce_window,
        cooldown_s=settings.cooldown_s,
    )


def defect_event(
    decision: DefectDecision, prediction: Prediction, frame_reference: str
) -> dict[str, Any]:
    return {
        "class": decision.label,
        "score": round(decision.score, 5),
        "scores": {k: round(v, 5) for k, v in prediction.scores.items()},
        "model": prediction.model,
        "backend": prediction.backend,
        "precision": prediction.precision,
        "latency_ms": round(prediction.latency_ms, 3),
        "frame": frame_reference,
        "debounce": f"{decision.hits}/{decision.window}",
        "decided_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }


class TriggerPipeline:
    """Runs frames through the model and publishes defect events; start/stop by voice or API."""

    def __init__(
        self,
        settings: TriggerSettings,
        inference: InferenceService,
        outbox: Outbox,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.inference = inference
        self.outbox = outbox
        self._clock = clock
        manifest = inference.current.loaded.manifest
        self.decider = decider_for(
            settings,
            manifest.thresholds,
            settings.ok_class if settings.ok_class in manifest.labels else manifest.ok_label,
        )
        self.frames_total = 0
        self.running = threading.Event()
        if settings.enabled:
            self.running.set()

    def process(self, data: bytes, frame_reference: str) -> tuple[Prediction, list[str]]:
        """One encoded frame; returns the prediction and the ids of the defect events queued."""
        return self.process_pixels(decode_image(data, frame_reference), frame_reference)

    def process_pixels(
        self, pixels: NDArray[np.uint8], frame_reference: str
    ) -> tuple[Prediction, list[str]]:
        prediction = self.inference.infer_pixels(pixels)
        self.frames_total += 1
        queued = []
        for decision in self.decider.observe(prediction.scores, self._clock()):
            message = self.outbox.put("defect", defect_event(decision, prediction, frame_reference))
            logger.info(
                "defect %s (%.3f) on %s -> event %s",
                decision.label,
                decision.score,
                frame_reference,
                message.id,
            )
            queued.append(message.id)
        return prediction, queued

    def run_folder(self, folder: WatchedFolder, stop: threading.Event) -> None:
        """Process the watched folder until ``stop`` is set; pauses while not running."""
        while not stop.is_set():
            self.inference.reload_if_changed()
            if self.running.is_set():
                for frame in folder.poll():
                    self._process_frame(folder, frame)
            stop.wait(POLL_S)

    def run_stream(self, frames: Iterable[PixelFrame], stop: threading.Event) -> int:
        """Process a video file or camera stream until it ends or ``stop`` is set."""
        processed = 0
        for frame in frames:
            if stop.is_set():
                break
            if self.running.is_set():
                self.process_pixels(frame.pixels, frame.reference)
                processed += 1
        return processed

    def _process_frame(self, folder: WatchedFolder, frame: Frame) -> None:
        try:
            self.process(frame.data, frame.reference)
        except InvalidImageError as exc:
            logger.warning("rejected frame %s: %s", frame.reference, exc.what)
            folder.finish(frame, rejected=True)
            return
        except MoltbotError as exc:
            logger.error("frame %s not processed: %s; it stays in the folder", frame.reference, exc)
            return
        folder.finish(frame)
