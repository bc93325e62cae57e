"""Frames → inference → decision → defect events in the outbox."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

import numpy as np
from numpy.typing import NDArray

from edge.config.model import TriggerSettings
from edge.errors import InvalidImageError, MoltbotError
from edge.inference.preprocess import decode_image
from edge.inference.service import InferenceService, Prediction
from edge.outbox.store import Outbox
from edge.triggers.decision import (
    DefectDecision,
    PartDecider,
    Thresholds,
    TriggerDecider,
    TriggerMode,
)
from edge.triggers.parts import part_id_from_path
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
    decision: DefectDecision,
    prediction: Prediction,
    frame_reference: str,
    *,
    mode: TriggerMode = "stream",
    part_id: str | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "class": decision.label,
        "score": round(decision.score, 5),
        "scores": {k: round(v, 5) for k, v in prediction.scores.items()},
        "model": prediction.model,
        "backend": prediction.backend,
        "precision": prediction.precision,
        "latency_ms": round(prediction.latency_ms, 3),
        "frame": frame_reference,
        "mode": mode,
    }
    if mode == "part":
        event["part_id"] = part_id or frame_reference
        event["classes"] = list(decision.classes)
    else:
        event["debounce"] = f"{decision.hits}/{decision.window}"
    event["decided_at"] = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
    return event


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
        self._ok_label = (
            settings.ok_class if settings.ok_class in manifest.labels else manifest.ok_label
        )
        self._model_thresholds = manifest.thresholds
        self.parts = PartDecider(
            Thresholds(
                self._ok_label,
                manifest.thresholds | settings.class_thresholds,
                settings.default_threshold,
            )
        )
        self._streams: dict[str, TriggerDecider] = {}
        self.frames_total = 0
        self.stream_frames_failed_total = 0
        self.running = threading.Event()
        if settings.enabled:
            self.running.set()

    def stream_decider(self, source: str) -> TriggerDecider:
        """Each stream (camera, video, uploads in stream mode) has its own debounce window."""
        if source not in self._streams:
            self._streams[source] = decider_for(
                self.settings, self._model_thresholds, self._ok_label
            )
        return self._streams[source]

    @property
    def decisions_total(self) -> dict[str, int]:
        totals = dict(self.parts.decisions_total)
        for decider in self._streams.values():
            for label, count in decider.decisions_total.items():
                totals[label] = totals.get(label, 0) + count
        return totals

    def process(
        self,
        data: bytes,
        frame_reference: str,
        *,
        mode: TriggerMode,
        part_id: str | None = None,
        source: str = "upload",
    ) -> tuple[Prediction, list[str]]:
        """One encoded frame; returns the prediction and the ids of the defect events queued."""
        pixels = decode_image(data, frame_reference)
        return self.process_pixels(
            pixels, frame_reference, mode=mode, part_id=part_id, source=source
        )

    def process_pixels(
        self,
        pixels: NDArray[np.uint8],
        frame_reference: str,
        *,
        mode: TriggerMode,
        part_id: str | None = None,
        source: str = "stream",
    ) -> tuple[Prediction, list[str]]:
        prediction = self.inference.infer_pixels(pixels)
        self.frames_total += 1
        if mode == "part":
            decision = self.parts.observe(prediction.scores)
            decisions = [] if decision is None else [decision]
        else:
            decisions = self.stream_decider(source).observe(prediction.scores, self._clock())
        queued = []
        for decision in decisions:
            event = defect_event(decision, prediction, frame_reference, mode=mode, part_id=part_id)
            message = self.outbox.put("defect", event)
            logger.info(
                "defect %s (%.3f) on %s -> event %s",
                decision.label,
                decision.score,
                event.get("part_id", frame_reference),
                message.id,
            )
            queued.append(message.id)
        return prediction, queued

    def run_folder(
        self, folder: WatchedFolder, stop: threading.Event, *, mode: TriggerMode = "part"
    ) -> None:
        """Process the watched folder until ``stop`` is set; pauses while not running."""
        while not stop.is_set():
            self.inference.reload_if_changed()
            if self.running.is_set():
                for frame in folder.poll():
                    self._process_frame(folder, frame, mode)
            stop.wait(POLL_S)

    def run_stream(
        self,
        frames: Iterable[PixelFrame],
        stop: threading.Event,
        *,
        mode: TriggerMode = "stream",
        source: str = "video",
    ) -> int:
        """Process a video file or camera stream until it ends or ``stop`` is set."""
        processed = 0
        for frame in frames:
            if stop.is_set():
                break
            if self.running.is_set():
                self._process_stream_frame(frame, mode, source)
                processed += 1
        return processed

    def _process_stream_frame(self, frame: PixelFrame, mode: TriggerMode, source: str) -> None:
        """One frame of a stream: a failure skips that frame (counted, logged at the first and
        then every 100th), never the stream; the next frame is the next chance."""
        try:
            self.process_pixels(frame.pixels, frame.reference, mode=mode, source=source)
        except Exception as exc:  # noqa: BLE001 - a stream must outlive any one frame
            self.stream_frames_failed_total += 1
            if self.stream_frames_failed_total % 100 == 1:
                logger.error(
                    "%s frame %s not processed (%d so far): %s: %s",
                    source,
                    frame.reference,
                    self.stream_frames_failed_total,
                    type(exc).__name__,
                    exc,
                )

    def _process_frame(self, folder: WatchedFolder, frame: Frame, mode: TriggerMode) -> None:
        try:
            self.process(
                frame.data,
                frame.reference,
                mode=mode,
                part_id=part_id_from_path(frame.path),
                source="folder",
            )
        except InvalidImageError as exc:  # the file itself: rejected/ with the reason
            folder.finish(frame, rejected=True, reason=str(exc))
            return
        except MoltbotError as exc:  # the outbox or the model, not the frame: try it again
            logger.error("frame %s not processed: %s; it stays in the folder", frame.reference, exc)
            return
        except Exception as exc:  # unforeseen, on this file's content: never a crash loop
            logger.exception("frame %s failed", frame.reference)
            folder.finish(
                frame, rejected=True, reason=f"processing failed: {type(exc).__name__}: {exc}"
            )
            return
        folder.finish(frame)
