"""Board profiles load and validate; detection from device-tree strings."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.board import (
    detect_board,
    load_board_profiles,
    match_board,
    read_device_tree_model,
    resolve_board,
)
from edge.errors import BoardProfileError

# model strings as the boards' device trees report them
DEVICE_TREE_SAMPLES = {
    "Raspberry Pi 4 Model B Rev 1.4": "rpi4b",
    "Raspberry Pi 4 Model B Rev 1.1": "rpi4b",
    "NVIDIA Jetson AGX Orin Developer Kit": "jetson-agx-orin",
    "Jetson AGX Orin": "jetson-agx-orin",
    "NVIDIA Jetson AGX Xavier Developer Kit": "jetson-agx-xavier",
    "Jetson-AGX": "jetson-agx-xavier",
}


@pytest.fixture(scope="module")
def profiles() -> dict:
    return load_board_profiles()


def test_the_four_shipped_profiles_load(profiles: dict) -> None:
    assert set(profiles) == {"rpi4b", "jetson-agx-orin", "jetson-agx-xavier", "generic-x86_64"}
    assert profiles["rpi4b"].cpu.simd == ["neon"]
    assert profiles["rpi4b"].boot_medium == "sd"
    assert profiles["jetson-agx-orin"].accelerator.gpu_arch == "Ampere"
    assert profiles["jetson-agx-xavier"].accelerator.gpu_arch == "Volta"
    assert profiles["jetson-agx-orin"].inference_backends == ["tensorrt", "ort-gpu", "ort-cpu"]
    assert profiles["jetson-agx-xavier"].storage_gb == 32


@pytest.mark.parametrize(("dt_model", "expected"), sorted(DEVICE_TREE_SAMPLES.items()))
def test_device_tree_model_selects_the_profile(
    profiles: dict, tmp_path: Path, dt_model: str, expected: str
) -> None:
    model_file = tmp_path / "proc/device-tree/model"
    model_file.parent.mkdir(parents=True)
    model_file.write_bytes(dt_model.encode() + b"\0")
    detection = detect_board(profiles, root=tmp_path, machine="aarch64")
    assert detection.profile is not None
    assert detection.profile.name == expected
    assert detection.dt_model == dt_model


def test_host_without_device_tree_is_generic_x86_64(profiles: dict, tmp_path: Path) -> None:
    detection = detect_board(profiles, root=tmp_path, machine="x86_64")
    assert detection.profile is not None
    assert detection.profile.name == "generic-x86_64"


def test_unknown_device_tree_matches_nothing_and_says_so(profiles: dict) -> None:
    detection = match_board(profiles, "Pine64 RockPro64", "aarch64")
    assert detection.profile is None
    assert "Pine64 RockPro64" in detection.reason


def test_sysfs_device_tree_path_is_read_too(tmp_path: Path) -> None:
    model_file = tmp_path / "sys/firmware/devicetree/base/model"
    model_file.parent.mkdir(parents=True)
    model_file.write_bytes(b"Raspberry Pi 4 Model B Rev 1.5\0")
    assert read_device_tree_model(tmp_path) == "Raspberry Pi 4 Model B Rev 1.5"


def test_configured_board_wins_over_detection(profiles: dict, tmp_path: Path) -> None:
    detection = resolve_board("jetson-agx-orin", profiles, root=tmp_path, machine="x86_64")
    assert detection.profile is not None
    assert detection.profile.name == "jetson-agx-orin"


def test_unknown_configured_board_lists_the_known_ones(profiles: dict) -> None:
    with pytest.raises(BoardProfileError, match="rpi4b") as caught:
        resolve_board("rpi5", profiles)
    assert caught.value.where == "device.board"


def test_invalid_profile_file_is_refused_with_its_path(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: bad\narch: mips\n")
    with pytest.raises(BoardProfileError, match="arch") as caught:
        load_board_profiles(tmp_path)
    assert caught.value.where == str(tmp_path / "bad.yaml")


def test_profile_name_must_match_its_file(tmp_path: Path) -> None:
    source = Path(__file__).parents[2] / "hw" / "rpi4b.yaml"
    (tmp_path / "pi.yaml").write_text(source.read_text())
    with pytest.raises(BoardProfileError, match="rename the file"):
        load_board_profiles(tmp_path)


def test_unknown_configured_board_falls_back_to_no_rtc_and_ort_cpu(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from edge.board import backend_order, configured_profile

    assert configured_profile("rpi5") is None
    assert "unknown board 'rpi5'" in caplog.text
    assert backend_order(None) == ["ort-cpu"]
    orin = configured_profile("jetson-agx-orin")
    assert backend_order(orin) == ["tensorrt", "ort-gpu", "ort-cpu"]
