"""A process's line in ``/proc/PID/stat``, read the one way the benchmarks and tests need it.

The command name (field 2) is in parentheses and may hold spaces or ``)``: the fields are what
follows its last ``)``, so ``fields[0]`` is the state (field 3 of proc(5)).
"""

from __future__ import annotations

import os
from pathlib import Path


def stat_fields(pid: int) -> list[str]:
    """Fields 3 onwards of ``/proc/PID/stat``; ``FileNotFoundError`` once the process is gone."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def state(pid: int) -> str | None:
    """The state letter (``R``, ``S``, ``Z`` …); None when no such process exists."""
    try:
        return stat_fields(pid)[0]
    except FileNotFoundError:
        return None


def parent_pid(pid: int) -> int | None:
    try:
        return int(stat_fields(pid)[1])
    except (FileNotFoundError, IndexError):
        return None


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used so far."""
    fields = stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
