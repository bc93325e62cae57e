"""The ``moltbot`` command line as a user runs it: a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema


def moltbot(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MOLTBOT_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        check=False,
    )


def test_help_lists_the_commands() -> None:
    result = moltbot("--help")
    assert result.returncode == 0
    for command in ("doctor", "config", "board"):
        assert command in result.stdout


def test_config_schema_is_a_valid_json_schema() -> None:
    result = moltbot("config", "schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert {"device", "inference", "triggers", "voice", "cache", "uplink", "api"} <= set(
        schema["properties"]
    )


def test_config_show_redacts_and_names_sources(tmp_path: Path) -> None:
    config_file = tmp_path / "c.yaml"
    config_file.write_text("uplink:\n  password: topsecret\n  port: 1999\n")
    result = moltbot(
        "--config", str(config_file), "config", "show", env={"MOLTBOT_API__PORT": "9090"}
    )
    assert result.returncode == 0, result.stderr
    assert "topsecret" not in result.stdout
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert lines["uplink.port"].endswith(str(config_file))
    assert lines["api.port"].endswith("MOLTBOT_API__PORT")
    assert "**********" in lines["uplink.password"]


def test_config_show_yaml_round_trips_through_the_loader(tmp_path: Path) -> None:
    result = moltbot(
        "config", "show", "--format", "yaml", env={"MOLTBOT_UPLINK__HOST": "plant-broker"}
    )
    assert result.returncode == 0, result.stderr
    dumped = tmp_path / "dumped.yaml"
    dumped.write_text(result.stdout.replace("'**********'", "null"))
    again = moltbot("--config", str(dumped), "config", "show", "--format", "json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["uplink"]["host"] == "plant-broker"


def test_bad_config_exits_2_naming_file_and_field(tmp_path: Path) -> None:
    config_file = tmp_path / "bad.yaml"
    config_file.write_text("cache:\n  retention_hours: -1\n")
    result = moltbot("--config", str(config_file), "config", "show")
    assert result.returncode == 2
    assert f"{config_file}: cache.retention_hours" in result.stderr
    assert "greater than 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_flag_shows_the_traceback(tmp_path: Path) -> None:
    config_file = tmp_path / "bad.yaml"
    config_file.write_text("cache: [\n")
    result = moltbot("--debug", "--config", str(config_file), "config", "show")
    assert result.returncode == 2
    assert "Traceback" in result.stderr


def test_board_list_names_every_profile() -> None:
    result = moltbot("board", "list")
    assert result.returncode == 0
    for name in ("rpi4b", "jetson-agx-orin", "jetson-agx-xavier", "generic-x86_64"):
        assert name in result.stdout


def test_unknown_command_is_a_usage_error() -> None:
    result = moltbot("frobnicate")
    assert result.returncode == 2
    assert "No such command" in result.stderr
