"""One update, start to finish: fetch and verify the bundle, check it fits, install, report.

``install_update`` is what ``moltbot system update`` and the appliance's update jobs run; it
takes the RAUC client as an argument (anything of the ``SlotInstaller`` shape), so tests drive
it with a fake one. Once the other slot is primary it records ``pending.json`` (from which slot
to which, the version), which the next start of the appliance turns into an ``update`` event
(``edge.update.outcome``). It never reboots: the caller decides (``reboot_system``).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from edge.errors import DependencyMissingError
from edge.update.download import (
    DEFAULT_MARGIN_BYTES,
    FetchedBundle,
    FreeBytes,
    RetryPolicy,
    fetch_bundle,
    free_bytes_of,
)
from edge.update.errors import UpdateError, UpdateSourceError
from edge.update.rauc import BundleInfo, InstallProgress, SlotsReport, SlotState
from edge.update.records import (
    PendingUpdate,
    current_boot_id,
    prepare_updates_dir,
    wall_time_iso,
    write_pending,
)

logger = logging.getLogger(__name__)

Emit = Callable[[str], None]


@dataclass(frozen=True)
class UpdateStep:
    """Where an update is: ``state`` (downloading, verifying, installing), the percent of that
    state (``None`` when unknown) and a line for people."""

    state: str
    percent: int | None
    message: str


StepCallback = Callable[[UpdateStep], None]


class SlotInstaller(Protocol):
    """What an update needs of RAUC (``RaucClient`` has this shape)."""

    def info(self, bundle: Path) -> BundleInfo: ...

    def status(self) -> SlotsReport: ...

    def install(
        self, bundle: Path, progress: Callable[[InstallProgress], None] | None = None
    ) -> None: ...


@dataclass(frozen=True)
class UpdateResult:
    """An installed bundle and the slot the next boot starts."""

    bundle: BundleInfo
    next_slot: str | None
    previous_version: str | None
    pending: PendingUpdate | None = None


def install_update(
    source: str,
    sha256: str,
    updates_dir: Path,
    rauc: SlotInstaller,
    *,
    emit: Emit,
    step: StepCallback | None = None,
    free_bytes: FreeBytes = free_bytes_of,
    retry: RetryPolicy | None = None,
    margin_bytes: int = DEFAULT_MARGIN_BYTES,
    boot_id: str | None = None,
) -> UpdateResult:
    """Fetch ``source`` into ``updates_dir`` and install it into the other slot.

    The bundle file is deleted once installed, or at once when it is for another board; after
    a failed install it stays, so running the command again needs no second download.
    ``emit`` gets lines for people, ``step`` the same progress as data.
    """
    steps = step or (lambda _step: None)
    meter = DownloadMeter(emit, step=steps)
    prepare_updates_dir(updates_dir)
    fetched = fetch_bundle(
        source,
        sha256,
        updates_dir,
        progress=meter.update,
        free_bytes=free_bytes,
        retry=retry,
        margin_bytes=margin_bytes,
    )
    verified = f"bundle verified: {fetched.path} ({fetched.size_bytes / 2**20:.1f} MiB)"
    emit(verified)
    steps(UpdateStep("verifying", None, verified))
    info = rauc.info(fetched.path)
    system = rauc.status()
    if info.compatible != system.compatible:
        _remove(fetched)
        raise UpdateSourceError(
            f"the bundle is for {info.compatible!r}, this system is {system.compatible!r}; "
            "the bundle was deleted",
            where=source,
            hint="fetch the bundle built for this board (`rauc info BUNDLE` shows its compatible)",
        )
    booted = system.booted_slot()
    emit(f"installing version {info.version} (running: {_version(booted)})")

    def installing(progress: InstallProgress) -> None:
        emit(f"install {progress.percent:3d}% {progress.message}")
        steps(UpdateStep("installing", progress.percent, progress.message))

    rauc.install(fetched.path, progress=installing)
    after = rauc.status()
    _remove(fetched)
    pending = _record_pending(updates_dir, booted, after, info, fetched.sha256, boot_id)
    return UpdateResult(
        info, after.boot_primary, booted.bundle_version if booted else None, pending
    )


def _record_pending(
    updates_dir: Path,
    booted: SlotState | None,
    after: SlotsReport,
    info: BundleInfo,
    sha256: str,
    boot_id: str | None,
) -> PendingUpdate | None:
    """``pending.json`` when the next boot starts another slot than this one."""
    next_slot = after.boot_primary
    if booted is None or next_slot is None or next_slot == booted.name:
        logger.warning(
            "the next boot starts %s (running: %s): no update is pending",
            next_slot or "an unknown slot",
            booted.name if booted else "unknown",
        )
        return None
    pending = PendingUpdate(
        from_slot=booted.name,
        to_slot=next_slot,
        version=info.version,
        sha256=sha256,
        recorded_at=wall_time_iso(),
        boot_id=boot_id or current_boot_id(),
    )
    write_pending(updates_dir, pending)
    return pending


class DownloadMeter:
    """Turns per-chunk progress into a line every 10 % (every 64 MiB when the size is unknown)."""

    def __init__(
        self,
        emit: Emit,
        *,
        step: StepCallback | None = None,
        step_percent: int = 10,
        step_bytes: int = 64 * 2**20,
    ) -> None:
        self.emit = emit
        self.step = step
        self.step_percent = step_percent
        self.step_bytes = step_bytes
        self.last: int | None = None

    def update(self, done: int, total: int | None) -> None:
        mark = (done * 100 // total // self.step_percent) if total else done // self.step_bytes
        if mark == self.last:
            return
        self.last = mark
        size = f"{done / 2**20:.1f}" + (f"/{total / 2**20:.1f} MiB" if total else " MiB")
        percent = done * 100 // total if total else None
        shown = "" if percent is None else f"{percent:3d}% "
        self.emit(f"download {shown}{size}")
        if self.step is not None:
            self.step(UpdateStep("downloading", percent, f"downloaded {size}"))


REBOOT_REQUEST = "reboot-requested"


def request_reboot(updates_dir: Path) -> None:
    """Ask for a reboot without privileges: the appliance runs as its own user with no
    capabilities, so it leaves ``<updates dir>/reboot-requested`` and the image's
    ``moltbot-reboot.path`` unit (root) removes it and reboots."""
    updates_dir.mkdir(parents=True, exist_ok=True)
    marker = updates_dir / REBOOT_REQUEST
    partial = marker.with_suffix(".partial")
    partial.write_text("reboot into the slot RAUC made primary\n")
    os.replace(partial, marker)


def reboot_system(
    systemctl: str = "systemctl", timeout_s: float = 60.0, *, updates_dir: Path | None = None
) -> None:
    """Reboot; the bootloader then tries the slot RAUC made primary. As root through systemd;
    otherwise (the appliance) by a request file in ``updates_dir``, when one is given."""
    if updates_dir is not None and os.geteuid() != 0:
        request_reboot(updates_dir)
        return
    program = shutil.which(systemctl)
    if program is None:
        raise DependencyMissingError(
            f"{systemctl} not found: cannot reboot",
            hint="reboot the device by hand to start the new slot",
        )
    try:
        result = subprocess.run(  # noqa: S603 - fixed argv
            [program, "reboot"], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise UpdateError(
            f"systemctl reboot did not return within {timeout_s:.0f} s",
            hint="reboot the device by hand to start the new slot",
        ) from exc
    if result.returncode != 0:
        raise UpdateError(
            f"systemctl reboot failed: {result.stderr.strip()}",
            hint="the update is installed; reboot the device by hand to start it",
        )


def _version(slot: SlotState | None) -> str:
    if slot is None or slot.bundle_version is None:
        return "unknown (not installed by RAUC)"
    return slot.bundle_version


def _remove(fetched: FetchedBundle) -> None:
    try:
        fetched.path.unlink()
    except OSError as exc:
        logger.warning("could not remove the installed bundle %s: %s", fetched.path, exc)
