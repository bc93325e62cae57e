"""A digital input that triggers part captures: a PLC's photo-eye on a GPIO line.

Each edge on the line (rising or falling, after the kernel's debounce) captures one frame from
the camera as one part. The line is read through libgpiod's v2 character-device API (the
``gpiod`` package, imported only when a trigger line is configured); edge timestamps come from
the kernel, so a burst of parts is counted even while a capture is still running. A chip that
disappears (USB GPIO expander unplugged) or cannot be opened is retried every ``reconnect_s``.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from edge.config.model import CameraSettings
from edge.errors import DependencyMissingError, InputError, MoltbotError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpioLineSpec:
    chip: str  # /dev/gpiochipN
    line: int
    edge: str  # "rising" or "falling"
    active_low: bool
    debounce_ms: float


class EdgeSource(Protocol):
    def wait(self, timeout_s: float) -> int:
        """Block up to ``timeout_s``; return how many edges arrived (0 on timeout)."""

    def close(self) -> None: ...


class GpiodEdges:
    """The line requested from the kernel with edge detection (libgpiod v2)."""

    def __init__(self, spec: GpioLineSpec) -> None:
        try:
            gpiod: Any = importlib.import_module("gpiod")
            line_mod: Any = importlib.import_module("gpiod.line")
        except ImportError as exc:
            raise DependencyMissingError(
                "the GPIO capture trigger needs the gpiod package",
                where="camera.trigger_gpio_chip",
                hint="pip install 'moltbot-edge[camera]' (images carry it)",
            ) from exc
        edge = line_mod.Edge.RISING if spec.edge == "rising" else line_mod.Edge.FALLING
        settings = gpiod.LineSettings(
            direction=line_mod.Direction.INPUT,
            edge_detection=edge,
            active_low=spec.active_low,
            debounce_period=timedelta(milliseconds=spec.debounce_ms),
        )
        try:
            self._request = gpiod.request_lines(
                spec.chip, consumer="moltbot-capture", config={spec.line: settings}
            )
        except (OSError, ValueError) as exc:
            raise MoltbotError(
                f"cannot request GPIO line {spec.line} on {spec.chip}: {exc}",
                where="camera.trigger_gpio_chip",
                hint="check the chip and line (gpioinfo), that no other program holds the line, "
                "and that the service user is in the 'gpio' group",
            ) from exc

    def wait(self, timeout_s: float) -> int:
        if not self._request.wait_edge_events(timedelta(seconds=timeout_s)):
            return 0
        return len(self._request.read_edge_events())

    def close(self) -> None:
        self._request.release()


class GpioCaptureTrigger:
    """Runs until stopped: every edge → ``capture({"part_id": …})``, one part each."""

    def __init__(
        self,
        spec: GpioLineSpec,
        capture: Callable[[dict[str, Any]], object],
        *,
        reconnect_s: float = 2.0,
        open_edges: Callable[[GpioLineSpec], EdgeSource] = GpiodEdges,
    ) -> None:
        self.spec = spec
        self._capture = capture
        self._reconnect_s = reconnect_s
        self._open_edges = open_edges
        self.triggers_total = 0
        self.captures_failed_total = 0
        self.connected = False

    @classmethod
    def from_settings(
        cls, settings: CameraSettings, capture: Callable[[dict[str, Any]], object]
    ) -> GpioCaptureTrigger | None:
        if settings.trigger_gpio_chip is None:
            return None
        spec = GpioLineSpec(
            settings.trigger_gpio_chip,
            settings.trigger_gpio_line,
            settings.trigger_gpio_edge,
            settings.trigger_gpio_active_low,
            settings.trigger_gpio_debounce_ms,
        )
        return cls(spec, capture, reconnect_s=settings.reconnect_s)

    def part_id(self) -> str:
        return f"gpio{self.spec.line}-{time.time_ns()}"

    def run(self, stop: threading.Event) -> None:
        reported = False
        while not stop.is_set():
            try:
                edges = self._open_edges(self.spec)
            except InputError:
                raise  # a configuration mistake: the supervisor reports it
            except MoltbotError as exc:
                if not reported:
                    logger.warning("%s; retrying every %.0f s", exc.what, self._reconnect_s)
                    reported = True
                stop.wait(self._reconnect_s)
                continue
            reported = False
            self.connected = True
            logger.info("capture trigger on %s line %d", self.spec.chip, self.spec.line)
            try:
                self._serve(edges, stop)
            except OSError as exc:
                logger.warning("GPIO line %d lost (%s); reopening", self.spec.line, exc)
            finally:
                self.connected = False
                edges.close()

    def _serve(self, edges: EdgeSource, stop: threading.Event) -> None:
        while not stop.is_set():
            for _ in range(edges.wait(0.5)):
                self.triggers_total += 1
                part_id = self.part_id()
                try:
                    self._capture({"part_id": part_id})
                except MoltbotError as exc:
                    # The part passed the eye and was not inspected: say so loudly.
                    self.captures_failed_total += 1
                    logger.error("part %s was NOT inspected: %s", part_id, exc.what)
