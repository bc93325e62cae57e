"""One logging setup: JSON lines under systemd, human text elsewhere."""

from __future__ import annotations

import io
import json
import logging

from edge.log_format import configure_logging, resolve_format


def test_auto_format_is_json_under_systemd_and_human_elsewhere() -> None:
    assert resolve_format("auto", {"JOURNAL_STREAM": "8:12345"}) == "json"
    assert resolve_format("auto", {}) == "human"
    assert resolve_format("human", {"JOURNAL_STREAM": "8:1"}) == "human"


def test_json_lines_carry_extra_fields_and_exceptions() -> None:
    stream = io.StringIO()
    configure_logging("json", "INFO", stream)
    log = logging.getLogger("edge.test")
    log.info("queued %d events", 3, extra={"topic": "moltbot/s/d/defect"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["msg"] == "queued 3 events"
    assert first["level"] == "INFO"
    assert first["topic"] == "moltbot/s/d/defect"
    assert "ValueError: boom" in second["exc"]


def test_configuring_twice_keeps_one_handler() -> None:
    configure_logging("human", "INFO", io.StringIO())
    configure_logging("human", "INFO", io.StringIO())
    names = [h.get_name() for h in logging.getLogger().handlers]
    assert names.count("moltbot") == 1
