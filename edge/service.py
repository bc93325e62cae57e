"""``moltbot run``: the appliance in one asyncio process.

Blocking parts run in threads with one owner each: the uplink (its own thread), the trigger
loop (a supervised thread, restarted with backoff if it fails), inference calls from the API
(``asyncio.to_thread``). Start order: outbox → model (loaded and reference-checked) → uplink →
triggers → API; then ``READY=1`` to systemd and ``WATCHDOG=1`` while every service is healthy.
SIGTERM: stop taking requests, let those in flight finish (their events are in the durable
outbox before they answer), stop the triggers, say ``offline`` and close MQTT, exit 0.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import uvicorn

from edge.api.app import create_app
from edge.api.events import EventFeed
from edge.api.metrics import Metrics, StateSnapshot
from edge.board import backend_order, configured_profile
from edge.camera.gpio_trigger import GpioCaptureTrigger
from edge.camera.inspection import CameraInspection
from edge.config.model import MoltbotConfig
from edge.errors import MoltbotError, VoiceError
from edge.identity import api_token, device_id
from edge.inference.registry import ModelRegistry
from edge.inference.service import InferenceService, Prediction
from edge.outbox.store import Outbox
from edge.systemd import notify, watchdog_interval_s
from edge.triggers.pipeline import TriggerPipeline
from edge.triggers.sources import WatchedFolder
from edge.uplink.build import build_uplink
from edge.uplink.dialect import InspectionModel
from edge.uplink.sync import LinkState, backoff_delay
from edge.voice.audio import WavSource
from edge.voice.listener import Utterance
from edge.voice.service import VoiceService, voice_event

logger = logging.getLogger(__name__)
MODEL_FOLLOW_S = 2.0
API_START_TIMEOUT_S = 30.0
GRACEFUL_SHUTDOWN_S = 10
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


class Appliance:
    """Everything one device runs, wired from one config."""

    def __init__(self, config: MoltbotConfig) -> None:
        self.config = config
        profile = configured_profile(config.device.board)
        self.device = device_id(config)
        self.token = api_token(config)
        self.outbox = Outbox.from_config(config, has_rtc=bool(profile and profile.has_rtc))
        self.events = EventFeed()
        self.outbox.add_listener(self.events.on_accepted)
        self.uplink = (
            build_uplink(config, self.outbox, self.device, model_info=self._model_info)
            if config.uplink.enabled
            else None
        )
        paths = config.paths()
        self.inference = (
            InferenceService(
                config.inference,
                ModelRegistry(paths.model_dir),
                backend_order(profile),
                paths.engine_cache_dir,
            )
            if config.inference.enabled
            else None
        )
        self.pipeline: TriggerPipeline | None = None
        self.camera: CameraInspection | None = None
        self.capture_trigger: GpioCaptureTrigger | None = None
        self.health: dict[str, ServiceHealth] = {}
        self.metrics = Metrics(self.snapshot)
        self.voice = (
            VoiceService(config.voice, paths.vosk_model_dir, self.outbox, self._voice_action)
            if config.voice.enabled
            else None
        )
        if self.voice is not None:
            self.voice.observers.append(self.metrics.observe_utterance)
        self.accepting = True
        self._stop = threading.Event()
        self._infer_lock = threading.Lock()  # one decision stream: debounce needs frame order

    # -- work -----------------------------------------------------------------------------

    def _model_info(self) -> InspectionModel | None:
        """The serving model, for what the uplink announces (Sparkplug's DBIRTH)."""
        if self.inference is None or not self.inference.ready:
            return None
        manifest = self.inference.current.loaded.manifest
        ok = self.config.triggers.ok_class
        return InspectionModel(manifest.ref, tuple(x for x in manifest.labels if x != ok))

    def load_model(self) -> None:
        if self.inference is None:
            return
        self.inference.start()
        self.inference.observers.append(self.metrics.observe_prediction)
        self.pipeline = TriggerPipeline(self.config.triggers, self.inference, self.outbox)
        if self.config.camera.enabled:
            self.camera = CameraInspection.from_settings(
                self.config.camera, self.pipeline, self._infer_lock
            )
            if self.uplink is not None:
                self.uplink.commands.register("capture", self.camera.capture)
            self.capture_trigger = GpioCaptureTrigger.from_settings(
                self.config.camera, self.camera.capture
            )

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
        with self._infer_lock:
            return self.pipeline.process(
                data,
                f"upload-{time.time_ns()}",
                mode=self.config.triggers.upload_mode,
                part_id=part_id,
                source="upload",
            )

    def _voice_action(self, utterance: Utterance) -> dict[str, Any]:
        """What a recognised command does; the answer goes into its voice event."""
        intent = utterance.intent
        assert intent is not None  # noqa: S101 - handle() only acts on matched intents
        if intent.action in ("start_inspection", "stop_inspection"):
            if self.pipeline is None:
                return {"ok": False, "error": "inference is disabled"}
            running = intent.action == "start_inspection"
            (self.pipeline.running.set if running else self.pipeline.running.clear)()
            return {"ok": True, "inspecting": running}
        if intent.action == "report_status":
            ready, checks = self.readiness()
            self.outbox.put("status", {"ready": ready, "checks": checks, "asked_by": "voice"})
            return {"ok": True, "ready": ready}
        if intent.action == "switch_model":
            if intent.model is None:
                return {"ok": False, "error": f"intent {intent.intent} names no model"}
            try:
                return {"ok": True, "serving": self.activate(intent.model)["model"]}
            except MoltbotError as exc:
                return {"ok": False, "error": exc.what}
        return {"ok": True}

    def transcribe(self, wav: bytes) -> list[dict[str, Any]]:
        """``POST /v1/asr``: every utterance in a WAV upload, acted on like spoken ones."""
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
            "messages": [asdict(m) for m in page],
            "next_after": page[-1].seq if more else None,
        }

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

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.events.bind(loop)
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
        notify("STATUS=loading the model")
        await asyncio.to_thread(self.load_model)
        if self.uplink is not None:
            self.uplink.start()
        supervised = [
            asyncio.create_task(self._supervise(name, target))
            for name, target in self._background_services()
        ]
        server = self._server()
        serving = asyncio.create_task(server.serve())
        try:
            await self._wait_started(server, serving)
            notify("READY=1", f"STATUS=serving on {self.config.api.host}:{server_port(server)}")
            logger.info(
                "appliance %s ready: API on %s:%d",
                self.device,
                self.config.api.host,
                server_port(server),
            )
            watchdog = asyncio.create_task(self._watchdog())
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait({serving, stopped}, return_when=asyncio.FIRST_COMPLETED)
            watchdog.cancel()
            stopped.cancel()
        finally:
            await self._shutdown(server, serving, supervised)
        return 0

    def _background_services(self) -> list[tuple[str, Callable[[], None]]]:
        services: list[tuple[str, Callable[[], None]]] = []
        voice = self.voice
        if voice is not None and self.config.voice.microphone:
            services.append(("voice", lambda: voice.run_microphone(self._stop)))
        pipeline, watch_dir = self.pipeline, self.config.triggers.watch_dir
        if pipeline is not None and watch_dir is not None:
            services.append(
                (
                    "triggers",
                    lambda: pipeline.run_folder(
                        WatchedFolder(watch_dir), self._stop, mode=self.config.triggers.folder_mode
                    ),
                )
            )
        elif self.inference is not None:
            services.append(("model_follow", self._follow_model))
        camera = self.camera
        if camera is not None:
            services.append(("camera", lambda: camera.run(self._stop)))
        trigger = self.capture_trigger
        if trigger is not None:
            services.append(("capture_trigger", lambda: trigger.run(self._stop)))
        return services

    def _follow_model(self) -> None:
        while not self._stop.wait(MODEL_FOLLOW_S):
            if self.inference is not None:
                self.inference.reload_if_changed()

    async def _supervise(self, name: str, target: Callable[[], None]) -> None:
        health = self.health.setdefault(name, ServiceHealth())
        rng = random.Random()  # noqa: S311 - jitter
        while not self._stop.is_set():
            health.running = True
            try:
                await asyncio.to_thread(target)
                if self._stop.is_set():
                    break
                raise MoltbotError(f"{name} stopped by itself")
            except Exception as exc:  # reported and restarted, never silent
                health.running = False
                health.last_error = str(exc)
                health.last_failure = time.monotonic()
                delay = backoff_delay(health.restarts, 1.0, 60.0, rng)
                health.restarts += 1
                logger.exception(
                    "service %s failed (restart %d in %.1f s)", name, health.restarts, delay
                )
                await asyncio.to_thread(self._stop.wait, delay)
        health.running = False

    def _server(self) -> uvicorn.Server:
        api = self.config.api
        config = uvicorn.Config(
            create_app(self),
            host=api.host,
            port=api.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
        return uvicorn.Server(config)

    async def _wait_started(self, server: uvicorn.Server, serving: asyncio.Task[None]) -> None:
        deadline = time.monotonic() + API_START_TIMEOUT_S
        while not server.started:
            if serving.done():
                serving.result()
                raise MoltbotError(
                    f"the API could not listen on {self.config.api.host}:{self.config.api.port}",
                    where="api.host/api.port",
                    hint="is another process using the port?",
                )
            if time.monotonic() > deadline:
                raise MoltbotError("the API did not start in time")
            await asyncio.sleep(0.05)

    async def _watchdog(self) -> None:
        interval = watchdog_interval_s()
        if interval is None:
            return
        while True:
            if self.healthy():
                notify("WATCHDOG=1")
            else:
                logger.warning("unhealthy: not petting the systemd watchdog")
            await asyncio.sleep(interval)

    async def _shutdown(
        self,
        server: uvicorn.Server,
        serving: asyncio.Task[None],
        supervised: list[asyncio.Task[None]],
    ) -> None:
        notify("STOPPING=1")
        logger.info("stopping: finishing requests in flight")
        self.accepting = False
        server.should_exit = True
        await asyncio.gather(serving, return_exceptions=True)
        self._stop.set()
        await asyncio.gather(*supervised, return_exceptions=True)
        if self.uplink is not None:
            await asyncio.to_thread(self.uplink.stop)
        waiting = len(self.outbox)
        self.outbox.close()
        logger.info("stopped; %d message(s) wait in the outbox", waiting)


def server_port(server: uvicorn.Server) -> int:
    for listener in getattr(server, "servers", []):
        for sock in listener.sockets:
            return int(sock.getsockname()[1])
    return server.config.port


def run_appliance(config: MoltbotConfig) -> int:
    return asyncio.run(Appliance(config).run())
