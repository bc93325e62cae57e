"""``moltbot run``: the appliance in one asyncio process — its lifecycle and supervision.

The parts come from :mod:`edge.wiring`; what the API and voice commands may ask of them is
:class:`edge.operations.ApplianceOperations`; this module starts, supervises and stops them.

Blocking parts run in threads with one owner each: the uplink (its own thread), the trigger
loop (a supervised thread, restarted with backoff if it fails), inference calls from the API
(``asyncio.to_thread``). Start order: outbox → model (loaded and reference-checked) → uplink →
triggers → API; then ``READY=1`` to systemd and ``WATCHDOG=1`` while every service is healthy.
SIGTERM: stop taking requests, let those in flight finish (their events are in the durable
outbox before they answer), stop the triggers, say ``offline`` and close MQTT, exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
import threading
import time
from collections.abc import Callable

import uvicorn

from edge import wiring
from edge.api.app import create_app
from edge.camera.gpio_trigger import GpioCaptureTrigger
from edge.camera.inspection import CameraInspection
from edge.config.model import MoltbotConfig
from edge.errors import MoltbotError
from edge.identity import api_token
from edge.operations import ApplianceOperations, ServiceHealth
from edge.systemd import notify, watchdog_interval_s
from edge.triggers.sources import WatchedFolder
from edge.uplink.dialect import InspectionModel
from edge.uplink.sync import backoff_delay
from edge.voice_actions import VoiceActions

logger = logging.getLogger(__name__)
MODEL_FOLLOW_S = 2.0
API_START_TIMEOUT_S = 30.0
GRACEFUL_SHUTDOWN_S = 10


class Appliance(ApplianceOperations):
    """One device's services, built through :mod:`edge.wiring`, started, supervised, stopped.

    What may be asked of the running parts (the API's facade) is inherited from
    :class:`ApplianceOperations`; this class adds only the lifecycle.
    """

    def __init__(self, config: MoltbotConfig) -> None:
        device = wiring.device_identity(config)
        outbox = wiring.open_outbox(config, device=device)
        super().__init__(
            config,
            device=device,
            token=api_token(config),
            outbox=outbox,
            uplink=(
                wiring.build_uplink(config, outbox, device, model_info=self._model_info)
                if config.uplink.enabled
                else None
            ),
            inference=wiring.inference_service(config) if config.inference.enabled else None,
            rauc=wiring.rauc_client(config),
        )
        if config.voice.enabled:
            self.voice = wiring.voice_service(config, outbox, VoiceActions(self))
            self.voice.observers.append(self.metrics.observe_utterance)
        self._stop = threading.Event()

    # -- start ----------------------------------------------------------------------------

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
        self.pipeline = wiring.trigger_pipeline(self.config, self.inference, self.outbox)
        if self.config.camera.enabled:
            self.camera = CameraInspection.from_settings(
                self.config.camera, self.pipeline, self.infer_lock
            )
            if self.uplink is not None:
                self.uplink.commands.register("capture", self.camera.capture)
            self.capture_trigger = GpioCaptureTrigger.from_settings(
                self.config.camera, self.camera.capture
            )

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
        self.updates.watch_previous_update()
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
        await asyncio.to_thread(self.updates.close)
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
