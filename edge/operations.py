"""What a running appliance does when asked: by the API, by a voice command, by an operator.

:class:`ApplianceOperations` implements :class:`edge.api.facade.ApplianceFacade` over the parts
``edge.wiring`` built: inference on uploads, transcription, model activation and rollback,
over-the-air updates (:class:`edge.update_jobs.UpdateJobs`, whose job runs in its own thread),
reports, readiness and the metrics snapshot. Otherwise it starts nothing and owns no thread:
starting, supervising and stopping is :class:`edge.service.Appliance`'s job.
"""

from __future__ import annotations

import io
import os
import threading
import time
from dataclasses import asdict, dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from edge.api.events import EventFeed
from edge.api.metrics import Metrics, StateSnapshot
from edge.errors import MoltbotError, VoiceError
from edge.update.install import reboot_system
from edge.update.request import UpdateRequest
from edge.update_jobs import UpdateJobs
from edge.uplink.sync import LinkState

if TYPE_CHECKING:
    from edge.camera.gpio_trigger import GpioCaptureTrigger
    from edge.camera.inspection import CameraInspection
    from edge.config.model import MoltbotConfig
    from edge.inference.service import InferenceService, Prediction
    from edge.outbox.store import Outbox
    from edge.triggers.pipeline import TriggerPipeline
    from edge.update.install import SlotInstaller
    from edge.uplink.sync import Uplink
    from edge.voice.service import VoiceService

FAILED_RECENTLY_S = 60.0  # a service that failed this recently is not ready (nor "up")


@dataclass
class ServiceHealth:
    running: bool = False
    restarts: int = 0
    last_error: str | None = None
    last_failure: float | None = None  # time.monotonic() of the last failure

    def failing(self, now: float) -> bool:
        """Down, or failed within ``FAILED_RECENTLY_S``: a crash loop never looks ready."""
        recent = self.last_failure is not None and now - self.last_failure < FAILED_RECENTLY_S
        return not self.running or recent


class ApplianceOperations:
    """The appliance's parts and what may be asked of them while it runs."""

    def __init__(
        self,
        config: MoltbotConfig,
        *,
        device: str,
        token: str,
        outbox: Outbox,
        uplink: Uplink | None,
        inference: InferenceService | None,
        rauc: SlotInstaller,
    ) -> None:
        self.config = config
        self.device = device
        self.token = token
        self.outbox = outbox
        self.uplink = uplink
        self.inference = inference
        self.events = EventFeed()
        self.outbox.add_listener(self.events.on_accepted)
        self.metrics = Metrics(self.snapshot)
        self.voice: VoiceService | None = None
        # made when the model is loaded (they need it):
        self.pipeline: TriggerPipeline | None = None
        self.camera: CameraInspection | None = None
        self.capture_trigger: GpioCaptureTrigger | None = None
        self.health: dict[str, ServiceHealth] = {}  # written by the supervisor
        self.accepting = True
        self.infer_lock = threading.Lock()  # one decision stream: debounce needs frame order
        updates_dir = config.paths().updates_dir
        self.updates = UpdateJobs(
            config.updates,
            updates_dir,
            rauc,
            outbox,
            quiet=self.infer_lock,
            reboot=partial(reboot_system, updates_dir=updates_dir),
        )
        if uplink is not None:
            uplink.commands.register("update", self.updates.command)

    def infer(
        self, data: bytes, trigger: bool, part_id: str | None = None
    ) -> tuple[Prediction, list[str]]:
        if self.inference is None or self.pipeline is None:
            raise MoltbotError(
                "inference is disabled on this device",
                where="inference.enabled",
                hint="enable it in the config",
            )
        if not trigger:
            return self.inference.infer_image(data), []
        with self.infer_lock:
            return self.pipeline.process(
                data,
                f"upload-{time.time_ns()}",
                mode=self.config.triggers.upload_mode,
                part_id=part_id,
                source="upload",
            )

    def transcribe(self, wav: bytes) -> list[dict[str, Any]]:
        """``POST /v1/asr``: every utterance in a WAV upload, acted on like spoken ones."""
        from edge.voice.audio import WavSource  # noqa: PLC0415 - only with voice enabled
        from edge.voice.service import voice_event  # noqa: PLC0415

        if self.voice is None:
            raise VoiceError(
                "voice is disabled on this device",
                where="voice.enabled",
                hint="set voice.enabled: true and install a Vosk model",
            )
        results = []
        for utterance in self.voice.listener().utterances(WavSource(io.BytesIO(wav))):
            event = self.voice.handle(utterance)
            results.append(event or voice_event(utterance))
        return results

    def activate(self, ref: str) -> dict[str, Any]:
        if self.inference is None:
            raise MoltbotError("inference is disabled on this device", where="inference.enabled")
        return self.inference.activate(ref).describe()

    def rollback(self, name: str) -> dict[str, Any]:
        if self.inference is None:
            raise MoltbotError("inference is disabled on this device", where="inference.enabled")
        return self.inference.rollback(name).describe()

    def models_report(self) -> dict[str, Any]:
        if self.inference is None:
            return {"enabled": False}
        entries = [asdict(entry) for entry in self.inference.registry.entries()]
        return {"enabled": True, "installed": entries, **self.inference.describe()}

    def outbox_report(self, peek: int, after: int = 0) -> dict[str, Any]:
        """Statistics, and one page of up to ``peek`` messages after sequence ``after``."""
        stats = self.outbox.stats()
        messages = self.outbox.page(after, peek + 1) if peek else []
        more = len(messages) > peek
        page = messages[:peek]
        return {
            "stats": asdict(stats),
            "messages": [m.to_json() for m in page],
            "next_after": page[-1].seq if more else None,
        }

    def start_update(self, request: UpdateRequest, requested_by: str) -> dict[str, Any]:
        """``POST /v1/system/update``: a job in the background; ``UpdateBusyError`` if one runs."""
        return self.updates.start(request, requested_by)

    def update_report(self) -> dict[str, Any]:
        return self.updates.report()

    def slots_report(self) -> dict[str, Any]:
        return self.updates.slots()

    # -- state ----------------------------------------------------------------------------

    def snapshot(self) -> StateSnapshot:
        uplink = self.uplink
        pipeline = self.pipeline
        now = time.monotonic()
        return StateSnapshot(
            outbox=self.outbox.stats(),
            uplink_connected=uplink.connected if uplink else None,
            uplink_published_total=uplink.counters.published_total if uplink else 0,
            uplink_connects_total=uplink.counters.connects_total if uplink else 0,
            frames_total=pipeline.frames_total if pipeline else 0,
            decisions_total=pipeline.decisions_total if pipeline else {},
            services_up={name: not h.failing(now) for name, h in self.health.items()},
            service_restarts_total={name: h.restarts for name, h in self.health.items()},
        )

    def readiness(self) -> tuple[bool, dict[str, str]]:
        checks: dict[str, str] = {}
        problems = False
        if self.inference is not None:
            loaded = self.inference.ready
            checks["model"] = self.inference.current.loaded.manifest.ref if loaded else "not loaded"
            problems |= not loaded
        writable = os.access(self.outbox.directory, os.W_OK)
        checks["outbox"] = "writable" if writable else f"{self.outbox.directory} not writable"
        problems |= not writable
        if self.uplink is not None:
            state = self.uplink.state
            checks["uplink"] = state.value + (
                f": {self.uplink.last_error}" if self.uplink.last_error else ""
            )
            problems |= state == LinkState.REFUSED  # a config problem; unreachable is normal
        if self.voice is not None:  # no microphone: reported, the rest stays ready
            checks["microphone"] = self.voice.microphone
        if not self.accepting:
            checks["service"] = "shutting down"
            problems = True
        now = time.monotonic()
        for name, health in self.health.items():
            if health.failing(now):
                checks[name] = f"failing: {health.last_error} ({health.restarts} restart(s) so far)"
                problems = True
        return not problems, checks

    def healthy(self) -> bool:
        uplink_alive = self.uplink is None or self.uplink.state != LinkState.STOPPED
        return uplink_alive and all(h.running for h in self.health.values())
