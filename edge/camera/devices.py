"""Which cameras are there? V4L2 capture devices from sysfs, and ``camera.device`` resolved.

``camera.device`` is a path (``/dev/video0``, ``/dev/v4l/by-id/usb-…``, or a video file, which
is read the same way), an index (``0``) or part of the name the driver reports
(``/sys/class/video4linux/videoN/name``, e.g. ``C920``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge.errors import InputError

SYS_VIDEO = Path("/sys/class/video4linux")


@dataclass(frozen=True)
class VideoDevice:
    path: str
    name: str


def list_video_devices(sys_root: Path = SYS_VIDEO) -> list[VideoDevice]:
    """V4L2 nodes that can capture (index 0 of each device: metadata nodes are skipped)."""
    found = []
    for node in sorted(sys_root.glob("video*"), key=lambda p: int(p.name[5:] or 0)):
        try:
            name = (node / "name").read_text().strip()
            index = (node / "index").read_text().strip() if (node / "index").exists() else "0"
        except OSError:
            continue
        if index == "0":
            found.append(VideoDevice(f"/dev/{node.name}", name))
    return found


def resolve_device(spec: str, sys_root: Path = SYS_VIDEO) -> str:
    if spec.startswith("/"):
        return spec
    if spec.isdigit():
        return f"/dev/video{spec}"
    devices = list_video_devices(sys_root)
    matches = [d for d in devices if spec.lower() in d.name.lower()]
    if matches:
        return matches[0].path
    listing = "; ".join(f"{d.path}: {d.name}" for d in devices) or "none"
    raise InputError(
        f"no camera named like {spec!r}",
        where="camera.device",
        hint=f"cameras found: {listing}; give a path, an index or part of a name",
    )
