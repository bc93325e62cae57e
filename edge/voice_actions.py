"""What a recognised voice command does on a running appliance.

The voice service hears and matches; this module acts: start/stop inspection, report the
status (a ``status`` event), switch the model. The answer goes into the command's voice event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edge.errors import MoltbotError

if TYPE_CHECKING:
    from edge.operations import ApplianceOperations
    from edge.voice.listener import Utterance


class VoiceActions:
    """The action handler given to :class:`edge.voice.service.VoiceService`."""

    def __init__(self, operations: ApplianceOperations) -> None:
        self.operations = operations

    def __call__(self, utterance: Utterance) -> dict[str, Any]:
        ops = self.operations
        intent = utterance.intent
        assert intent is not None  # noqa: S101 - handle() only acts on matched intents
        if intent.action in ("start_inspection", "stop_inspection"):
            if ops.pipeline is None:
                return {"ok": False, "error": "inference is disabled"}
            running = intent.action == "start_inspection"
            (ops.pipeline.running.set if running else ops.pipeline.running.clear)()
            return {"ok": True, "inspecting": running}
        if intent.action == "report_status":
            ready, checks = ops.readiness()
            ops.outbox.put("status", {"ready": ready, "checks": checks, "asked_by": "voice"})
            return {"ok": True, "ready": ready}
        if intent.action == "switch_model":
            if intent.model is None:
                return {"ok": False, "error": f"intent {intent.intent} names no model"}
            try:
                return {"ok": True, "serving": ops.activate(intent.model)["model"]}
            except MoltbotError as exc:
                return {"ok": False, "error": exc.what}
        return {"ok": True}
