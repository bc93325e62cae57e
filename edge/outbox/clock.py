"""Time for the outbox on a board without a real-time clock.

A Raspberry Pi 4 restarts its wall clock from the last saved time after a power cut, so wall
time can jump backwards or forwards. The outbox therefore keeps its own **elapsed clock**:
seconds of device uptime accumulated across boots (persisted at checkpoints), which never runs
backwards. Message ages and retention use it. Each message also records the wall time, the
boot id and the boot-time clock, so a timestamp taken before NTP sync can be corrected once the
clock is synchronised (same boot: ``wall_now - (boottime_now - boottime_then)``).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")
TimeSource = Literal["wall", "corrected", "unsynced"]


class ClockSource(Protocol):
    """What the outbox asks of the machine's clocks; tests inject their own."""

    def wall(self) -> float: ...
    def boottime(self) -> float: ...
    def boot_id(self) -> str: ...
    def wall_is_trusted(self) -> bool: ...


class SystemClock:
    """The real clocks: CLOCK_REALTIME, CLOCK_BOOTTIME, the kernel's boot id, NTP state."""

    # How often an unsynchronised clock asks timedatectl again: a device on a line without NTP
    # must not start a subprocess for every event it stores (the sync flag is still read).
    TIMEDATECTL_EVERY_S = 30.0

    def __init__(
        self,
        sync_flag: Path,
        *,
        trust_without_sync: bool,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sync_flag = sync_flag
        self._trust_without_sync = trust_without_sync
        self._synced = False  # latched: once synchronised, trusted for the rest of the boot
        self._boot_id: str | None = None
        self._monotonic = monotonic
        self._asked_at: float | None = None

    def wall(self) -> float:
        return time.time()

    def boottime(self) -> float:
        return time.clock_gettime(time.CLOCK_BOOTTIME)

    def boot_id(self) -> str:
        if self._boot_id is None:
            try:
                self._boot_id = BOOT_ID_FILE.read_text().strip()
            except OSError:
                self._boot_id = f"unknown-{int(time.time() - self.boottime())}"
        return self._boot_id

    def wall_is_trusted(self) -> bool:
        if self._trust_without_sync or self._synced:
            return True
        self._synced = self._sync_flag.exists() or self._ask_timedatectl()
        return self._synced

    def _ask_timedatectl(self) -> bool:
        now = self._monotonic()
        if self._asked_at is not None and now - self._asked_at < self.TIMEDATECTL_EVERY_S:
            return False
        self._asked_at = now
        return _timedatectl_says_synchronized()


def _timedatectl_says_synchronized() -> bool:
    binary = shutil.which("timedatectl")
    if binary is None:
        return False
    try:
        result = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [binary, "show", "--property=NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.stdout.strip() == "yes"


@dataclass(frozen=True)
class ClockCheckpoint:
    """The elapsed clock as last persisted, with the clocks it was read against."""

    boot_id: str
    boottime: float
    elapsed: float
    wall: float
    wall_trusted: bool

    def to_json(self) -> dict[str, object]:
        return {
            "boot_id": self.boot_id,
            "boottime": self.boottime,
            "elapsed": self.elapsed,
            "wall": self.wall,
            "wall_trusted": self.wall_trusted,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ClockCheckpoint:
        return cls(
            boot_id=str(data["boot_id"]),
            boottime=float(data["boottime"]),  # type: ignore[arg-type]
            elapsed=float(data["elapsed"]),  # type: ignore[arg-type]
            wall=float(data["wall"]),  # type: ignore[arg-type]
            wall_trusted=bool(data["wall_trusted"]),
        )


class ElapsedClock:
    """Seconds of life of this outbox, across reboots; never runs backwards."""

    def __init__(self, source: ClockSource, last: ClockCheckpoint | None) -> None:
        self.source = source
        boot_id, now_boot = source.boot_id(), source.boottime()
        if last is None:
            base = 0.0
        elif last.boot_id == boot_id:  # same boot: another process or a restart of ours
            base = last.elapsed - last.boottime
        else:  # a new boot: count this boot's uptime plus, when both walls are trusted, the gap
            base = last.elapsed + self._powered_off_gap(last, now_boot)
        self._base = base  # elapsed = base + boottime

    def _powered_off_gap(self, last: ClockCheckpoint, now_boot: float) -> float:
        if not (last.wall_trusted and self.source.wall_is_trusted()):
            return 0.0
        this_boot_started = self.source.wall() - now_boot
        return max(0.0, this_boot_started - last.wall)

    def now(self) -> float:
        return self._base + self.source.boottime()

    def checkpoint(self) -> ClockCheckpoint:
        return ClockCheckpoint(
            boot_id=self.source.boot_id(),
            boottime=self.source.boottime(),
            elapsed=self.now(),
            wall=self.source.wall(),
            wall_trusted=self.source.wall_is_trusted(),
        )


def corrected_wall_time(
    *,
    created_wall: float,
    created_boottime: float,
    created_boot_id: str,
    created_trusted: bool,
    source: ClockSource,
) -> tuple[float, TimeSource]:
    """The best wall time for a message, and how we know it."""
    if created_trusted:
        return created_wall, "wall"
    if source.boot_id() == created_boot_id and source.wall_is_trusted():
        return source.wall() - (source.boottime() - created_boottime), "corrected"
    return created_wall, "unsynced"
