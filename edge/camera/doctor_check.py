"""``moltbot doctor``'s camera check: the V4L2 cameras there are, and the configured one."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from edge.camera.devices import list_video_devices, resolve_device
from edge.config.model import CameraSettings
from edge.errors import InputError


def camera_problems(settings: CameraSettings, root: Path) -> tuple[str, list[str], str | None]:
    """(what was found, problems, fix) — no problems means the configured camera can be used."""
    devices = list_video_devices(root / "sys/class/video4linux")
    found = "; ".join(f"{d.path}: {d.name}" for d in devices) or "no V4L2 camera"
    if not settings.enabled:
        return found, [], None
    problems: list[str] = []
    fix = None
    if importlib.util.find_spec("cv2") is None:
        problems.append("OpenCV is not installed")
        fix = "pip install 'moltbot-edge[camera]'"
    try:
        path = resolve_device(settings.device, root / "sys/class/video4linux")
    except InputError as exc:
        return found, [*problems, exc.what], exc.hint
    if not os.path.exists(path):
        problems.append(f"{path} does not exist")
        fix = "plug the camera in, or set camera.device (a path, an index or part of its name)"
    elif not os.access(path, os.R_OK | os.W_OK):
        problems.append(f"{path} is not readable and writable by this user")
        fix = "add the service user to the 'video' group"
    return f"{path} ({found})", problems, fix
