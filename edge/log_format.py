"""One logging setup for every command: human text on a terminal, JSON lines under systemd."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import datetime, timezone
from typing import Literal, TextIO

LogFormat = Literal["auto", "human", "json"]

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is a field.
_STANDARD_RECORD_FIELDS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)
_HANDLER_NAME = "moltbot"


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, plus every ``extra=`` field."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_RECORD_FIELDS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def running_under_systemd(environ: dict[str, str] | None = None) -> bool:
    """systemd sets JOURNAL_STREAM when stdout/stderr go to the journal."""
    env = os.environ if environ is None else environ
    return bool(env.get("JOURNAL_STREAM") or env.get("INVOCATION_ID"))


def resolve_format(requested: LogFormat, environ: dict[str, str] | None = None) -> LogFormat:
    if requested != "auto":
        return requested
    return "json" if running_under_systemd(environ) else "human"


def configure_logging(
    log_format: LogFormat = "auto", level: str = "INFO", stream: TextIO | None = None
) -> None:
    """Install (or replace) the one handler on the root logger; safe to call again."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(_HANDLER_NAME)
    if resolve_format(log_format) == "json":
        handler.setFormatter(JsonLineFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    for existing in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
