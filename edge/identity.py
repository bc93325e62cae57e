"""The device's identity: its id from config, or the one generated once and kept in the data dir."""

from __future__ import annotations

import logging
import re
import secrets

from edge.config.model import TOPIC_SAFE_NAME, MoltbotConfig
from edge.errors import ConfigError
from edge.files import write_text_atomically

logger = logging.getLogger(__name__)
DEVICE_ID_FILE = "device-id"
API_TOKEN_FILE = "api-token"  # noqa: S105 - a file name, not a secret


def device_id(config: MoltbotConfig, *, create: bool = True) -> str:
    """``device.id`` if set; else the id stored in the data dir, generated on first use."""
    if config.device.id:
        return config.device.id
    stored = config.device.data_dir / DEVICE_ID_FILE
    if stored.is_file():
        value = stored.read_text().strip()
        if not re.fullmatch(TOPIC_SAFE_NAME, value):
            raise ConfigError(
                f"the stored device id {value!r} is not a valid MQTT topic level",
                where=str(stored),
                hint="delete the file to generate a new id, or set device.id",
            )
        return value
    generated = f"moltbot-{secrets.token_hex(4)}"
    if create:
        write_text_atomically(stored, generated + "\n")
        logger.info("generated device id %s (stored in %s)", generated, stored)
    return generated


def api_token(config: MoltbotConfig) -> str:
    """``api.token`` if set; else the device's token, generated once (first boot), mode 0600."""
    if config.api.token is not None:
        return config.api.token.get_secret_value()
    stored = config.device.data_dir / API_TOKEN_FILE
    if stored.is_file():
        value = stored.read_text().strip()
        if value:
            return value
    generated = secrets.token_urlsafe(32)
    write_text_atomically(stored, generated + "\n")
    stored.chmod(0o600)
    logger.info("generated the API token (stored in %s, readable by this user only)", stored)
    return generated
