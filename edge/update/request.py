"""An update asked for over the network (``POST /v1/system/update``, MQTT ``cmd/update``).

Both take the same JSON object, ``{"url": "https://…", "sha256": "<64 hex>", "reboot": true}``,
checked here once: only ``http(s)`` URLs (a local bundle is installed on the device with
``moltbot system update``), a well-formed sha256, a boolean ``reboot``, nothing else.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge.update.download import is_url, normalise_sha256
from edge.update.errors import UpdateSourceError

MAX_URL_CHARS = 4096
FIELDS = frozenset({"url", "sha256", "reboot"})
EXAMPLE = '{"url": "https://…/moltbot.raucb", "sha256": "<64 hex digits>", "reboot": true}'


@dataclass(frozen=True)
class UpdateRequest:
    url: str
    sha256: str
    reboot: bool = True

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UpdateRequest:
        unknown = sorted(set(data) - FIELDS)
        if unknown:
            raise UpdateSourceError(
                f"unknown field(s) in the update request: {', '.join(unknown)}", hint=EXAMPLE
            )
        url, sha256, reboot = data.get("url"), data.get("sha256"), data.get("reboot", True)
        if not isinstance(url, str) or not _usable_url(url):
            raise UpdateSourceError(
                "url must be an http:// or https:// URL of a RAUC bundle",
                where="url",
                hint="a bundle already on the device: `moltbot system update PATH --sha256 …`",
            )
        if not isinstance(reboot, bool):
            raise UpdateSourceError("reboot must be true or false", where="reboot")
        try:
            digest = normalise_sha256(sha256 if isinstance(sha256, str) else "")
        except UpdateSourceError as exc:
            raise UpdateSourceError(
                "sha256 must be the bundle's sha256: 64 hexadecimal digits",
                where="sha256",
                hint="copy it from the bundle's SHA256SUMS (sha256sum BUNDLE prints it)",
            ) from exc
        return cls(url=url, sha256=digest, reboot=reboot)

    @property
    def shown_url(self) -> str:
        """The URL without credentials or query (a pre-signed link's signature stays here)."""
        return redact_url(self.url)


def _usable_url(url: str) -> bool:
    if len(url) > MAX_URL_CHARS or not is_url(url):
        return False
    try:
        return bool(urllib.parse.urlsplit(url).hostname) and bool(redact_url(url))
    except ValueError:  # a port that is not a number, or out of range
        return False


def redact_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    query = "?…" if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", "")) + query
