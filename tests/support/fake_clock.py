"""An injectable clock for the outbox: wall time, boot time, boot id and NTP state by hand."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FakeClock:
    wall_s: float = 1_790_000_000.0
    boottime_s: float = 100.0
    current_boot_id: str = "boot-1"
    trusted: bool = True

    def wall(self) -> float:
        return self.wall_s

    def boottime(self) -> float:
        return self.boottime_s

    def boot_id(self) -> str:
        return self.current_boot_id

    def wall_is_trusted(self) -> bool:
        return self.trusted

    def advance(self, seconds: float) -> None:
        self.wall_s += seconds
        self.boottime_s += seconds

    def reboot(
        self, *, boot_id: str, wall_s: float, boottime_s: float = 5.0, trusted: bool = False
    ) -> None:
        """A power cut: boot time restarts, the wall clock restarts wherever it restarts."""
        self.current_boot_id = boot_id
        self.wall_s = wall_s
        self.boottime_s = boottime_s
        self.trusted = trusted
