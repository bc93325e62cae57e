"""What an update leaves on the data partition for the next boot to read.

``pending.json`` is written by ``install_update`` once a bundle is installed and the other slot
is primary: which slot the update left, which it goes to, the bundle's version and sha256, when
and in which boot. ``last-boot.json`` is written by ``moltbot system confirm-boot`` at every boot:
the booted slot, what the health gate decided and why. The appliance reads both at its next start
(``edge.update.outcome``) and reports the update as installed or rolled back.

Both files are small JSON objects written atomically. Boots are told apart by the kernel's boot
id, not by the wall clock: a board without an RTC may start with the clock of its last shutdown.

Root writes here too (``moltbot-confirm-boot.service``, ``sudo moltbot system update``), the
appliance runs as its own user and must still write bundles and remove ``pending.json``: what
root creates in the folder (and the folder) is given to the owner of the data dir above it.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from edge.errors import MoltbotError
from edge.files import write_text_atomically

logger = logging.getLogger(__name__)

PENDING_FILE = "pending.json"
LAST_BOOT_FILE = "last-boot.json"
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
Record = TypeVar("Record")


def current_boot_id(source: Path = BOOT_ID_FILE) -> str:
    """The kernel's id of this boot (a new one at every boot); ``unknown`` where unreadable."""
    try:
        return source.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


def wall_time_iso(now: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now))


@dataclass(frozen=True)
class PendingUpdate:
    """An installed update the device has not yet booted and confirmed (``pending.json``)."""

    from_slot: str
    to_slot: str
    version: str
    sha256: str
    recorded_at: str
    boot_id: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PendingUpdate:
        return cls(**{name: str(data[name]) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class BootVerdict:
    """What ``confirm-boot`` decided about the slot it booted in (``last-boot.json``)."""

    slot: str
    bootname: str | None
    verdict: str  # a health_gate.Verdict value
    reason: str
    boot_id: str
    decided_at: str
    checks: tuple[dict[str, Any], ...] = ()
    error: str | None = None  # marking the slot failed: what rauc said

    @property
    def good(self) -> bool:
        return self.verdict in ("mark-good", "already-good") and self.error is None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "checks": list(self.checks)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BootVerdict:
        return cls(
            slot=str(data["slot"]),
            bootname=data.get("bootname"),
            verdict=str(data["verdict"]),
            reason=str(data["reason"]),
            boot_id=str(data["boot_id"]),
            decided_at=str(data["decided_at"]),
            checks=tuple(data.get("checks") or ()),
            error=data.get("error"),
        )


def prepare_updates_dir(updates_dir: Path) -> Path:
    """Create the folder, owned like the data dir it is in (see the module's docstring)."""
    updates_dir.mkdir(parents=True, exist_ok=True)
    _owned_like_data_dir(updates_dir, updates_dir)
    return updates_dir


def _owned_like_data_dir(path: Path, updates_dir: Path) -> None:
    if os.geteuid() != 0:
        return
    try:
        owner = updates_dir.parent.stat()
        os.chown(path, owner.st_uid, owner.st_gid)
    except OSError as exc:
        logger.warning("cannot give %s to the data dir's owner: %s", path, exc)


def _write(updates_dir: Path, name: str, data: dict[str, Any]) -> Path:
    prepare_updates_dir(updates_dir)
    path = updates_dir / name
    write_text_atomically(path, json.dumps(data, indent=2) + "\n")
    _owned_like_data_dir(path, updates_dir)
    return path


def write_pending(updates_dir: Path, pending: PendingUpdate) -> Path:
    return _write(updates_dir, PENDING_FILE, pending.to_json())


def read_pending(updates_dir: Path) -> PendingUpdate | None:
    data = _read(updates_dir / PENDING_FILE)
    return (
        None if data is None else _parse(PendingUpdate.from_json, data, updates_dir / PENDING_FILE)
    )


def remove_pending(updates_dir: Path) -> None:
    (updates_dir / PENDING_FILE).unlink(missing_ok=True)


def write_boot_verdict(updates_dir: Path, verdict: BootVerdict) -> Path:
    return _write(updates_dir, LAST_BOOT_FILE, verdict.to_json())


def read_boot_verdict(updates_dir: Path) -> BootVerdict | None:
    data = _read(updates_dir / LAST_BOOT_FILE)
    return (
        None if data is None else _parse(BootVerdict.from_json, data, updates_dir / LAST_BOOT_FILE)
    )


def _read(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise MoltbotError(f"cannot read {path.name}: {exc}", where=str(path)) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MoltbotError(
            f"{path.name} is not JSON: {exc}",
            where=str(path),
            hint="it is written atomically, so something else wrote it: delete it",
        ) from exc
    if not isinstance(data, dict):
        raise MoltbotError(f"{path.name} is not a JSON object", where=str(path))
    return data


def _parse(parse: Callable[[dict[str, Any]], Record], data: dict[str, Any], path: Path) -> Record:
    try:
        return parse(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise MoltbotError(
            f"{path.name} lacks a field or has one of the wrong type ({exc!r})",
            where=str(path),
            hint="delete it; the next update or boot writes it again",
        ) from exc
