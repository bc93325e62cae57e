"""What this CPU offers: SIMD features named as the board profiles name them, physical cores."""

from __future__ import annotations

import os
from pathlib import Path

_FLAG_NAMES = {
    "asimd": "neon",
    "asimddp": "dotprod",
    "sse4_2": "sse4_2",
    "avx2": "avx2",
    "avx512f": "avx512",
    "avx512_vnni": "vnni",
    "avx_vnni": "vnni",
}


def cpu_features(cpuinfo: str) -> set[str]:
    """SIMD features from /proc/cpuinfo text (x86 ``flags``, Arm ``Features``)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in {"flags", "Features"}:
            flags |= set(value.split())
    return {name for flag, name in _FLAG_NAMES.items() if flag in flags}


def read_cpu_features(root: Path = Path("/")) -> set[str]:
    try:
        return cpu_features((root / "proc/cpuinfo").read_text(errors="replace"))
    except OSError:
        return set()


def physical_cores(cpuinfo: str | None = None) -> int:
    """Distinct (physical id, core id) pairs; Arm kernels list no core ids: one per processor."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    cores: set[tuple[str, str]] = set()
    physical = core = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "physical id":
            physical = value
        elif key == "core id":
            core = value
            cores.add((physical, core))
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    counted = len(cores) or available or os.cpu_count() or 1
    return max(1, min(counted, available or counted))
