"""The on-device self-test's verdicts, run here against a registry in a scratch data dir."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge.config import MoltbotConfig
from edge.selftest import PREFIX, hardware_watchdog, run_selftest
from tests.support.models import installed_registry

REPO = Path(__file__).parents[2]


def config_for(data_dir: Path) -> MoltbotConfig:
    return MoltbotConfig.model_validate(
        {
            "device": {"data_dir": str(data_dir), "board": "generic-x86_64"},
            "api": {"enabled": False},
        }
    )


def test_selftest_passes_when_the_active_model_reproduces_its_reference_outputs(
    tmp_path: Path,
) -> None:
    installed_registry(tmp_path / "models")
    lines: list[str] = []
    report = run_selftest(config_for(tmp_path), timeout_s=5, emit=lines.append, check_boot=False)
    assert report.passed, lines
    assert lines[-1] == f"{PREFIX} PASS"
    assert any("ok reference inference: defect@1" in line for line in lines)


def test_selftest_fails_when_reference_outputs_do_not_match(tmp_path: Path) -> None:
    registry = installed_registry(tmp_path / "models")
    folder = registry.folder("defect", "1")
    manifest = json.loads((folder / "manifest.json").read_text())
    for variant in manifest["variants"].values():
        reference = folder / variant["reference_output"]
        expected = np.load(reference)
        np.save(reference, np.roll(expected, 1, axis=1))
    lines: list[str] = []
    report = run_selftest(config_for(tmp_path), timeout_s=5, emit=lines.append, check_boot=False)
    assert not report.passed
    assert lines[-1] == f"{PREFIX} FAIL"
    assert any("FAIL reference inference" in line for line in lines)


def _watchdog(root: Path, name: str, **attributes: str) -> None:
    device = root / name
    device.mkdir(parents=True)
    for attribute, value in attributes.items():
        (device / attribute).write_text(f"{value}\n")


def test_an_armed_hardware_watchdog_is_reported_with_its_timeout(tmp_path: Path) -> None:
    _watchdog(
        tmp_path,
        "watchdog0",
        identity="Broadcom BCM2835 Watchdog timer",
        state="active",
        timeout="30",
    )
    assert hardware_watchdog(tmp_path) == (
        True,
        "Broadcom BCM2835 Watchdog timer active, timeout 30 s",
    )


def test_a_watchdog_nobody_armed_fails_and_names_the_setting(tmp_path: Path) -> None:
    _watchdog(tmp_path, "watchdog0", identity="i6300ESB timer", state="inactive", timeout="30")
    ok, detail = hardware_watchdog(tmp_path)
    assert not ok
    assert (
        detail.startswith("i6300ESB timer inactive: not armed") and "RuntimeWatchdogSec" in detail
    )


def test_a_board_without_a_watchdog_passes_and_says_so(tmp_path: Path) -> None:
    assert hardware_watchdog(tmp_path / "absent") == (
        True,
        "none on this board: a hang is not reset",
    )
    assert hardware_watchdog(tmp_path)[0] is True  # the class folder, but no device
