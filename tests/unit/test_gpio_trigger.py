"""The GPIO capture trigger: one capture, one part, per edge on the photo-eye's line.

No GPIO chip exists on this host (no gpiochip, no gpio-sim module), so the edge source is a
stand-in that replays edges; the real libgpiod request is exercised up to the kernel (a chip
that is not there) with the real ``gpiod`` package.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

import pytest
from pydantic import ValidationError

from edge.camera.gpio_trigger import GpioCaptureTrigger, GpiodEdges, GpioLineSpec
from edge.config.model import CameraSettings
from edge.errors import MoltbotError

SPEC = GpioLineSpec("/dev/gpiochip0", 17, "rising", active_low=False, debounce_ms=5.0)


class ReplayedEdges:
    """Edges per wait() from a script; an exception in the script is raised by wait()."""

    def __init__(self, script: list[int | Exception], stop: threading.Event) -> None:
        self.script = deque(script)
        self.stop = stop
        self.closed = False

    def wait(self, timeout_s: float) -> int:
        if not self.script:
            self.stop.set()
            return 0
        step = self.script.popleft()
        if isinstance(step, Exception):
            raise step
        return step

    def close(self) -> None:
        self.closed = True


def run_trigger(
    opens: list[ReplayedEdges | MoltbotError], capture: Any, stop: threading.Event
) -> GpioCaptureTrigger:
    queue = deque(opens)

    def open_edges(spec: GpioLineSpec) -> ReplayedEdges:
        assert spec == SPEC
        step = queue.popleft()
        if isinstance(step, MoltbotError):
            raise step
        return step

    trigger = GpioCaptureTrigger(SPEC, capture, reconnect_s=0.01, open_edges=open_edges)
    trigger.run(stop)
    return trigger


def test_every_edge_captures_one_part_with_its_own_id() -> None:
    stop = threading.Event()
    captured: list[str] = []
    edges = ReplayedEdges([1, 0, 3, 1], stop)
    trigger = run_trigger([edges], lambda args: captured.append(args["part_id"]), stop)
    assert len(captured) == 5 == trigger.triggers_total
    assert len(set(captured)) == 5
    assert all(part.startswith("gpio17-") for part in captured)
    assert edges.closed


def test_a_failed_capture_is_counted_and_logged_and_the_next_edge_still_captures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = threading.Event()
    results = deque([MoltbotError("the camera gave no frame"), None])
    captured: list[str] = []

    def capture(args: dict[str, Any]) -> None:
        outcome = results.popleft()
        if outcome is not None:
            raise outcome
        captured.append(args["part_id"])

    with caplog.at_level(logging.ERROR):
        trigger = run_trigger([ReplayedEdges([2], stop)], capture, stop)
    assert trigger.captures_failed_total == 1
    assert len(captured) == 1
    assert "was NOT inspected: the camera gave no frame" in caplog.text


def test_a_chip_that_cannot_be_opened_is_retried_and_a_lost_line_is_reopened() -> None:
    stop = threading.Event()
    captured: list[str] = []
    lost = ReplayedEdges([1, OSError("No such device")], stop)
    back = ReplayedEdges([1], stop)
    missing = MoltbotError("cannot request GPIO line 17 on /dev/gpiochip0")
    trigger = run_trigger(
        [missing, missing, lost, back], lambda args: captured.append(args["part_id"]), stop
    )
    assert len(captured) == 2
    assert lost.closed and back.closed
    assert not trigger.connected


def test_the_real_gpiod_request_names_the_chip_and_what_to_check() -> None:
    """libgpiod itself, asked for a chip this host does not have."""
    spec = GpioLineSpec("/dev/gpiochip99", 3, "falling", active_low=True, debounce_ms=10.0)
    with pytest.raises(MoltbotError) as caught:
        GpiodEdges(spec)
    assert "cannot request GPIO line 3 on /dev/gpiochip99" in caught.value.what
    assert "gpioinfo" in (caught.value.hint or "")


def test_a_gpio_trigger_needs_part_mode_and_a_gpiochip_path() -> None:
    with pytest.raises(ValidationError, match=r"set camera\.mode to part"):
        CameraSettings(enabled=True, trigger_gpio_chip="/dev/gpiochip0", mode="stream")
    with pytest.raises(ValidationError, match="gpiochip"):
        CameraSettings(enabled=True, trigger_gpio_chip="/dev/sda", mode="part")
    settings = CameraSettings(enabled=True, trigger_gpio_chip="/dev/gpiochip1", mode="part")
    trigger = GpioCaptureTrigger.from_settings(settings, lambda args: None)
    assert trigger is not None and trigger.spec.chip == "/dev/gpiochip1"
    assert GpioCaptureTrigger.from_settings(CameraSettings(), lambda args: None) is None
