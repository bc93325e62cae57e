"""Redaction, the effective-config table and the config reference."""

from __future__ import annotations

import json
import re
from pathlib import Path

from edge.config import load_config
from edge.config.secrets import secret_paths
from edge.config.view import effective_rows, redacted_tree, reference_markdown

SECRETS = {"MOLTBOT_UPLINK__PASSWORD": "hunter2-broker", "MOLTBOT_API__TOKEN": "tok-s3cret"}


def test_secret_fields_are_found_from_the_model_types() -> None:
    assert secret_paths() == {"uplink.password", "api.token", "system.wifi_psk"}


def test_redacted_tree_masks_every_secret(tmp_path: Path) -> None:
    config = load_config(environ=SECRETS, system_file=tmp_path / "x").config
    dumped = json.dumps(redacted_tree(config))
    assert "hunter2-broker" not in dumped
    assert "tok-s3cret" not in dumped
    assert redacted_tree(config)["uplink"]["password"] == "**********"
    assert config.uplink.password is not None
    assert config.uplink.password.get_secret_value() == "hunter2-broker"


def test_effective_rows_redact_and_name_sources(tmp_path: Path) -> None:
    rows = {
        row.key: row
        for row in effective_rows(load_config(environ=SECRETS, system_file=tmp_path / "x"))
    }
    assert rows["api.token"].value == "**********"
    assert rows["api.token"].source == "MOLTBOT_API__TOKEN"
    assert rows["uplink.port"].source == "default"
    assert rows["cache.dir"].source == "derived from device.data_dir"
    assert rows["cache.dir"].value == "/var/lib/moltbot/outbox"


def test_readme_config_reference_is_current() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = re.search(
        r"<!-- config-reference:start -->\n(.*?)\n<!-- config-reference:end -->", readme, re.S
    )
    assert block is not None, "README.md lost its config-reference markers"
    assert block.group(1).strip() == reference_markdown().strip(), (
        "README's config reference is stale: regenerate it with `moltbot config reference`"
    )


def test_reference_lists_every_setting_with_its_variable() -> None:
    reference = reference_markdown()
    assert "`uplink.tls.ca_file`" in reference
    assert "`MOLTBOT_UPLINK__TLS__CA_FILE`" in reference
    assert "| secret or unset |" in reference
