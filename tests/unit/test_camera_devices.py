"""Finding cameras by path, index or name in a sysfs tree laid out like the kernel's."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.camera.devices import list_video_devices, resolve_device
from edge.config import MoltbotConfig
from edge.doctor import Status, check_camera, run_doctor
from edge.errors import InputError


def sysfs(root: Path) -> Path:
    base = root / "sys/class/video4linux"
    for node, name, index in [
        ("video0", "HD Pro Webcam C920", "0"),
        ("video1", "HD Pro Webcam C920", "1"),  # its metadata node
        ("video2", "USB Camera: USB Camera", "0"),
    ]:
        (base / node).mkdir(parents=True)
        (base / node / "name").write_text(name + "\n")
        (base / node / "index").write_text(index + "\n")
    return base


def test_capture_nodes_are_listed_and_metadata_nodes_skipped(tmp_path: Path) -> None:
    devices = list_video_devices(sysfs(tmp_path))
    assert [(d.path, d.name) for d in devices] == [
        ("/dev/video0", "HD Pro Webcam C920"),
        ("/dev/video2", "USB Camera: USB Camera"),
    ]


def test_a_camera_is_found_by_path_index_or_part_of_its_name(tmp_path: Path) -> None:
    base = sysfs(tmp_path)
    assert resolve_device("/dev/v4l/by-id/usb-cam", base) == "/dev/v4l/by-id/usb-cam"
    assert resolve_device("2", base) == "/dev/video2"
    assert resolve_device("c920", base) == "/dev/video0"
    with pytest.raises(InputError, match="no camera named like") as error:
        resolve_device("Basler", base)
    assert "/dev/video0: HD Pro Webcam C920" in str(error.value.hint)


def test_doctor_lists_cameras_and_fails_a_configured_camera_that_is_missing(
    tmp_path: Path,
) -> None:
    sysfs(tmp_path)
    disabled = MoltbotConfig()
    check = run_doctor(disabled, root=tmp_path, machine="x86_64", broker_timeout_s=0.1)
    camera = {c.name: c for c in check.checks}["camera"]
    assert camera.status == Status.SKIP and "HD Pro Webcam C920" in camera.detail
    enabled = MoltbotConfig.model_validate({"camera": {"enabled": True, "device": "/nonexistent"}})
    context = type("Context", (), {"config": enabled, "root": tmp_path})()
    missing = check_camera(context)  # type: ignore[arg-type]
    assert missing.status == Status.FAIL and missing.fix and "camera.device" in missing.fix
    video = tmp_path / "line.avi"
    video.write_bytes(b"")
    present = MoltbotConfig.model_validate({"camera": {"enabled": True, "device": str(video)}})
    context = type("Context", (), {"config": present, "root": tmp_path})()
    assert check_camera(context).status == Status.OK  # type: ignore[arg-type]
