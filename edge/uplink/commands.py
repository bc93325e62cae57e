"""Commands received on ``…/cmd/{name}``: a registry of handlers; unknown ones answer an error.

A handler takes the decoded JSON object and returns a reply object (published as a ``status``
event) or raises ``MoltbotError``. Nothing a broker sends can crash the uplink: every failure
becomes an ``error`` event through the outbox. Handlers run on the uplink's thread, so one that
takes long starts its work elsewhere and answers at once: ``update`` (registered by the
appliance) replies with its job, whose progress follows as ``update`` events.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from edge.errors import MoltbotError
from edge.outbox.store import Outbox

logger = logging.getLogger(__name__)

CommandHandler = Callable[[dict[str, Any]], dict[str, Any]]


class CommandRouter:
    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox
        self._handlers: dict[str, CommandHandler] = {"ping": self._ping}

    def register(self, name: str, handler: CommandHandler) -> None:
        self._handlers[name] = handler

    @property
    def names(self) -> list[str]:
        return sorted(self._handlers)

    def _ping(self, _arguments: dict[str, Any]) -> dict[str, Any]:
        stats = self._outbox.stats()
        return {"pong": True, "outbox_depth": stats.depth, "outbox_bytes": stats.bytes}

    def handle(self, name: str, raw_payload: bytes) -> None:
        """Run one command; its reply or its error goes out as an event."""
        try:
            arguments = self._decode(name, raw_payload)
            handler = self._handlers.get(name)
            if handler is None:
                self._error(name, f"unknown command {name!r}", f"known commands: {self.names}")
                return
            reply = handler(arguments)
            self._outbox.put("status", {"command": name, "reply": reply})
        except MoltbotError as exc:
            self._error(name, exc.what, exc.hint)
        except Exception as exc:
            logger.exception("command %s failed", name)
            self._error(name, f"command failed: {type(exc).__name__}: {exc}", None)

    def _decode(self, name: str, raw_payload: bytes) -> dict[str, Any]:
        if not raw_payload.strip():
            return {}
        try:
            decoded = json.loads(raw_payload)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise MoltbotError(
                f"command {name!r} payload is not JSON: "
                + ("nested too deeply" if isinstance(exc, RecursionError) else str(exc)),
                hint='send a JSON object, e.g. {} or {"model": "defect@2"}',
            ) from exc
        if not isinstance(decoded, dict):
            raise MoltbotError(
                f"command {name!r} payload must be a JSON object",
                hint="wrap the arguments in an object",
            )
        return decoded

    def _error(self, name: str, message: str, hint: str | None) -> None:
        logger.warning("command %s: %s", name, message)
        try:
            self._outbox.put("error", {"command": name, "error": message, "hint": hint})
        except MoltbotError as exc:
            logger.error("cannot queue the error reply for command %s: %s", name, exc)
