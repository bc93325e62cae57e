"""Which root file system this is: the release the image builder wrote into it.

An A/B update replaces the whole root file system, so its release (the update bundle's
version) says what a device runs; ``/healthz`` and ``moltbot system slots`` report it.
"""

from __future__ import annotations

from pathlib import Path

RELEASE_FILE = Path("/etc/moltbot/release")


def installed_release(path: Path = RELEASE_FILE) -> str | None:
    """The release, or None on a system the image builder did not make (a developer host)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        return None
    return text or None
