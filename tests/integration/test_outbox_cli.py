"""``moltbot outbox …`` and ``moltbot event send`` as an installer runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.uplink_rig import collecting
from tests.support.mosquitto import MosquittoBroker

pytestmark = pytest.mark.integration


def run(
    data_dir: Path, broker: MosquittoBroker, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOLTBOT_")}
    env |= {
        "MOLTBOT_DEVICE__DATA_DIR": str(data_dir),
        "MOLTBOT_DEVICE__ID": "cli-device",
        "MOLTBOT_DEVICE__SITE": "line-3",
        "MOLTBOT_UPLINK__HOST": broker.host,
        "MOLTBOT_UPLINK__PORT": str(broker.port),
    }
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_event_send_queues_and_stats_and_peek_show_it(
    data_dir: Path, mosquitto: MosquittoBroker
) -> None:
    sent = run(data_dir, mosquitto, "event", "send", "status", "--payload", '{"hello": 1}')
    assert sent.returncode == 0, sent.stderr
    assert "moltbot/line-3/cli-device/status/report" in sent.stdout
    stats = json.loads(run(data_dir, mosquitto, "outbox", "stats", "--json").stdout)
    assert stats["depth"] == 1
    peeked = run(data_dir, mosquitto, "outbox", "peek", "5").stdout.strip().splitlines()
    assert json.loads(peeked[0])["payload"] == {"hello": 1}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["event", "send", "defect", "--payload", "{broken"], "--payload is not JSON"),
        (["event", "send", "defect/x"], "invalid event kind"),
        (["event", "send", "defect", "--payload", "[1, 2]"], "must be a JSON object"),
    ],
)
def test_bad_event_input_exits_2_with_a_reason(
    data_dir: Path, mosquitto: MosquittoBroker, args: list[str], message: str
) -> None:
    result = run(data_dir, mosquitto, *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_event_send_deliver_reaches_the_broker(data_dir: Path, mosquitto: MosquittoBroker) -> None:
    with collecting(mosquitto) as consumer:
        result = run(data_dir, mosquitto, "event", "send", "telemetry", "--deliver")
        assert result.returncode == 0, result.stderr
        assert "delivered" in result.stdout
        assert consumer.wait_for(lambda _m: len(consumer.events()) == 1, 10)
    assert consumer.events()[0].topic == "moltbot/line-3/cli-device/telemetry"


def test_drain_once_fails_when_the_broker_is_down_and_keeps_the_data(
    data_dir: Path, mosquitto: MosquittoBroker
) -> None:
    run(data_dir, mosquitto, "event", "send", "defect")
    mosquitto.stop()
    result = run(data_dir, mosquitto, "outbox", "drain", "--once", "--timeout", "2")
    assert result.returncode == 1
    assert "1 left in the outbox" in result.stdout
    assert "cannot reach the broker" in result.stderr


def test_purge_asks_for_confirmation(data_dir: Path, mosquitto: MosquittoBroker) -> None:
    run(data_dir, mosquitto, "event", "send", "telemetry")
    refused = run(data_dir, mosquitto, "outbox", "purge", "--older-than", "0", stdin="n\n")
    assert refused.returncode == 1
    assert json.loads(run(data_dir, mosquitto, "outbox", "stats", "--json").stdout)["depth"] == 1
    done = run(data_dir, mosquitto, "outbox", "purge", "--older-than", "0", "--yes")
    assert done.returncode == 0
    assert "purged 1 message(s)" in done.stdout


def test_event_send_from_file_queues_every_good_line_and_names_the_bad_ones(
    data_dir: Path, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    lines = [json.dumps({"kind": "defect", "payload": {"part": n}}) for n in range(50)]
    lines[10] = "not json"
    lines[20] = json.dumps({"kind": "Bad Kind", "payload": {}})
    batch = tmp_path / "events.jsonl"
    batch.write_text("\n".join(["# one event per part", *lines, ""]))
    result = run(data_dir, mosquitto, "event", "send", "--from-file", str(batch))
    assert result.returncode == 2
    assert "queued 48 event(s), 2 refused" in result.stdout
    assert "line 12: not JSON" in result.stderr  # numbered as in the file (comment = line 1)
    assert "line 22: invalid event kind 'Bad Kind'" in result.stderr
    peek = run(data_dir, mosquitto, "outbox", "peek", "100")
    parts = [json.loads(line)["payload"]["part"] for line in peek.stdout.splitlines()]
    assert parts == [n for n in range(50) if n not in (10, 20)]


def test_event_send_reads_payload_lines_from_stdin_for_one_kind(
    data_dir: Path, mosquitto: MosquittoBroker
) -> None:
    stdin = "".join(json.dumps({"part": n}) + "\n" for n in range(5))
    with collecting(mosquitto) as consumer:
        result = run(
            data_dir,
            mosquitto,
            "event",
            "send",
            "telemetry",
            "--from-file",
            "-",
            "--deliver",
            stdin=stdin,
        )
        assert result.returncode == 0, result.stderr
        assert consumer.wait_for(
            lambda ms: len([m for m in ms if "/telemetry" in m.topic]) >= 5, 10
        )
    assert "queued 5 event(s), 0 refused" in result.stdout
