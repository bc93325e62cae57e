"""``moltbot system confirm-boot``: gate the booted slot, write the verdict, mark, reboot.

RAUC, ``fw_printenv`` and ``systemctl`` are stand-ins replaying captured rauc 1.8 output
(``tests/support/rauc.py``): the real RAUC needs its D-Bus service and a bootloader, and no test
may reboot this host. The self-test's checks run for real where they can (the shipped model's
reference outputs on ONNX Runtime; an HTTP probe of a port where nothing listens).
"""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edge.config import MoltbotConfig
from edge.config.model import UpdateSettings
from edge.update.confirm import NO_SLOTS, confirm_boot, rauc_system_conf
from edge.update.errors import BootStateError
from edge.update.health_gate import CheckResult, HealthCheck
from edge.update.rauc import RaucClient
from edge.update.records import PendingUpdate, read_boot_verdict, write_pending
from edge.update_jobs import boot_health_checks
from tests.support.models import installed_registry
from tests.support.mosquitto import free_port
from tests.support.rauc import (
    FW_ENV_MARKED_GOOD,
    FW_ENV_ON_TRIAL,
    MARK_GOOD_FW_ENV_BROKEN,
    STATUS_BOOTED_B,
    FakeTools,
    run_moltbot,
)

UNIT = Path(__file__).parents[2] / "edge" / "units" / "moltbot-confirm-boot.service"
MARKED_GOOD = "rauc status: marked slot rootfs.1 as good\n"
MARKED_BAD = "rauc status: marked slot rootfs.1 as bad\n"
UPDATE_TO_B = PendingUpdate(
    from_slot="rootfs.0",
    to_slot="rootfs.1",
    version="2.0.0",
    sha256="ab" * 32,
    recorded_at="2026-12-05T04:29:31Z",
    boot_id="boot-install",
)


@pytest.fixture
def tools(tmp_path: Path) -> FakeTools:
    return FakeTools(tmp_path / "bin")


def rauc_on_trial(tools: FakeTools, fw_env: str = FW_ENV_ON_TRIAL) -> RaucClient:
    """Booted in B (captured), with the attempts ``fw_env`` gives; marking succeeds."""
    return RaucClient(
        rauc=tools.tool(
            "rauc",
            {"args": ["status", "mark-good"], "stdout": MARKED_GOOD},
            {"args": ["status", "mark-bad"], "stdout": MARKED_BAD},
            {"args": ["status", "--detailed"], "stdout": STATUS_BOOTED_B},
        ),
        fw_printenv=tools.tool("fw_printenv", {"args": [], "stdout": fw_env}),
    )


def passing(_left_s: float) -> CheckResult:
    return CheckResult(True, "fine")


def failing(_left_s: float) -> CheckResult:
    return CheckResult(False, "HTTP 503")


def checks_of(*runs: object) -> list[HealthCheck]:
    return [HealthCheck(f"check{n}", run) for n, run in enumerate(runs)]  # type: ignore[arg-type]


class Reboots:
    def __init__(self, updates: Path) -> None:
        self.updates = updates
        self.verdicts_on_disk: list[str | None] = []

    def __call__(self) -> None:
        verdict = read_boot_verdict(self.updates)
        self.verdicts_on_disk.append(verdict.verdict if verdict else None)


def rauc_calls(tools: FakeTools) -> list[list[str]]:
    return [call[1:] for call in tools.commands() if call[0] == "rauc"]


def test_a_slot_on_trial_whose_checks_pass_is_marked_good_and_the_verdict_kept(
    tools: FakeTools, tmp_path: Path
) -> None:
    updates = tmp_path / "updates"
    reboots = Reboots(updates)
    verdict = confirm_boot(
        rauc_on_trial(tools),
        lambda: checks_of(passing, passing),
        updates,
        attempts_max=3,
        deadline_s=60,
        reboot=reboots,
        boot_id="boot-2",
    )
    assert (verdict.verdict, verdict.slot, verdict.bootname) == ("mark-good", "rootfs.1", "B")
    assert verdict.good
    assert rauc_calls(tools)[-1] == ["status", "mark-good", "booted"]
    assert reboots.verdicts_on_disk == []
    stored = json.loads((updates / "last-boot.json").read_text())
    assert (stored["verdict"], stored["boot_id"]) == ("mark-good", "boot-2")
    assert [check["name"] for check in stored["checks"]] == ["check0", "check1"]


def test_a_slot_booted_for_an_update_that_stays_unhealthy_is_marked_bad_and_left(
    tools: FakeTools, tmp_path: Path
) -> None:
    updates = tmp_path / "updates"
    write_pending(updates, UPDATE_TO_B)
    reboots = Reboots(updates)
    clock = iter(range(0, 1000, 10))
    verdict = confirm_boot(
        rauc_on_trial(tools),
        lambda: checks_of(passing, failing),
        updates,
        attempts_max=3,
        deadline_s=30,
        reboot=reboots,
        boot_id="boot-2",
        clock=lambda: float(next(clock)),
        sleep=lambda _s: None,
    )
    assert verdict.verdict == "mark-bad"
    assert "check1: HTTP 503" in verdict.reason
    assert rauc_calls(tools)[-1] == ["status", "mark-bad", "booted"]
    assert reboots.verdicts_on_disk == ["mark-bad"], "the reason is on disk before the reboot"


def test_a_routine_boot_whose_checks_fail_is_left_on_trial_not_sent_to_the_other_slot(
    tools: FakeTools, tmp_path: Path
) -> None:
    """No update brought this slot: a failure both slots share must not bounce the device."""
    updates = tmp_path / "updates"
    reboots = Reboots(updates)
    verdict = confirm_boot(
        rauc_on_trial(tools),
        lambda: checks_of(failing),
        updates,
        attempts_max=3,
        deadline_s=1,
        reboot=reboots,
        boot_id="boot-2",
    )
    assert verdict.verdict == "left-on-trial"
    assert not verdict.good
    assert "not booted for an update" in verdict.reason
    assert not any(call[1].startswith("mark") for call in rauc_calls(tools))
    assert reboots.verdicts_on_disk == []


def test_the_boot_that_installed_is_not_the_update_s_trial(
    tools: FakeTools, tmp_path: Path
) -> None:
    """pending.json of this very boot names the slot, but the slot was not booted for it."""
    updates = tmp_path / "updates"
    write_pending(updates, UPDATE_TO_B)
    verdict = confirm_boot(
        rauc_on_trial(tools),
        lambda: checks_of(failing),
        updates,
        attempts_max=3,
        deadline_s=1,
        reboot=Reboots(updates),
        boot_id="boot-install",
    )
    assert verdict.verdict == "left-on-trial"


def test_a_slot_not_on_trial_runs_no_check_and_marks_nothing(
    tools: FakeTools, tmp_path: Path
) -> None:
    def no_checks() -> Sequence[HealthCheck]:
        raise AssertionError("checks built for a slot that is not on trial")

    verdict = confirm_boot(
        rauc_on_trial(tools, FW_ENV_MARKED_GOOD),
        no_checks,
        tmp_path / "updates",
        attempts_max=3,
        deadline_s=60,
        reboot=Reboots(tmp_path / "updates"),
        boot_id="boot-2",
    )
    assert verdict.verdict == "already-good"
    assert rauc_calls(tools) == [["status", "--detailed", "--output-format=json"]]
    assert read_boot_verdict(tmp_path / "updates") == verdict


def test_a_slot_that_cannot_be_marked_fails_loudly_and_the_file_says_why(
    tools: FakeTools, tmp_path: Path
) -> None:
    updates = tmp_path / "updates"
    rauc = RaucClient(
        rauc=tools.tool(
            "rauc",
            {"args": ["status", "mark-good"], "stderr": MARK_GOOD_FW_ENV_BROKEN, "rc": 1},
            {"args": ["status", "--detailed"], "stdout": STATUS_BOOTED_B},
        ),
        fw_printenv=tools.tool("fw_printenv", {"args": [], "stdout": FW_ENV_ON_TRIAL}),
    )
    with pytest.raises(BootStateError, match="could not mark slot 'booted' as good"):
        confirm_boot(
            rauc,
            lambda: checks_of(passing),
            updates,
            attempts_max=3,
            deadline_s=60,
            reboot=Reboots(updates),
            boot_id="boot-2",
        )
    verdict = read_boot_verdict(updates)
    assert verdict is not None
    assert not verdict.good
    assert "could not mark slot" in (verdict.error or "")


def test_system_conf_is_found_where_configured_or_in_rauc_s_places(tmp_path: Path) -> None:
    assert rauc_system_conf(tmp_path / "absent.conf") is None
    conf = tmp_path / "system.conf"
    conf.write_text("[system]\ncompatible=moltbot-test\nbootloader=uboot\n")
    assert rauc_system_conf(conf) == conf


def write_config(tmp_path: Path, **updates: object) -> Path:
    config = tmp_path / "config.yaml"
    settings = {
        "device": {"data_dir": str(tmp_path / "data"), "board": "generic-x86_64"},
        "api": {"enabled": False},
        "inference": {"enabled": False},
        "updates": {"rauc_system_conf": str(tmp_path / "system.conf"), **updates},
    }
    config.write_text(json.dumps(settings))  # JSON is YAML
    return config


def test_confirm_boot_without_rauc_does_nothing_and_exits_0(
    tools: FakeTools, tmp_path: Path
) -> None:
    tools.tool("rauc", {"args": [], "rc": 1})
    result = run_moltbot(
        "--config", str(write_config(tmp_path)), "system", "confirm-boot", path_dir=tools.folder
    )
    assert result.returncode == 0, result.stderr
    assert NO_SLOTS in result.stderr + result.stdout
    assert tools.calls() == []
    assert not (tmp_path / "data" / "updates").exists()


def device_tools(tools: FakeTools, tmp_path: Path, system_state: str, failed: str = "") -> None:
    rauc_on_trial(tools)
    tools.tool(
        "systemctl",
        {"args": ["is-system-running"], "stdout": f"{system_state}\n"},
        {"args": ["--failed"], "stdout": failed},
        {"args": ["reboot"]},
    )
    (tmp_path / "system.conf").write_text("[system]\ncompatible=moltbot-test\n")


def test_confirm_boot_marks_a_healthy_slot_on_trial_good(tools: FakeTools, tmp_path: Path) -> None:
    device_tools(tools, tmp_path, "running")
    result = run_moltbot(
        "--config", str(write_config(tmp_path)), "system", "confirm-boot", path_dir=tools.folder
    )
    assert result.returncode == 0, result.stderr
    assert "ok system: running, no failed units" in result.stdout
    assert "rootfs.1 marked good" in result.stdout
    assert ["rauc", "status", "mark-good", "booted"] in tools.commands()
    assert ["systemctl", "reboot"] not in tools.calls()
    verdict = read_boot_verdict(tmp_path / "data" / "updates")
    assert verdict is not None and verdict.verdict == "mark-good"


def test_confirm_boot_sends_an_updated_slot_with_a_failed_unit_back(
    tools: FakeTools, tmp_path: Path
) -> None:
    device_tools(tools, tmp_path, "degraded", "broken.service loaded failed failed Broken\n")
    write_pending(tmp_path / "data" / "updates", UPDATE_TO_B)
    config = write_config(tmp_path, health_gate_deadline_s=1)
    result = run_moltbot("--config", str(config), "system", "confirm-boot", path_dir=tools.folder)
    assert result.returncode == 1, result.stderr
    assert "FAIL system: degraded; failed units: broken.service" in result.stdout
    assert "rootfs.1 marked bad, rebooting" in result.stdout
    calls = tools.commands()
    assert calls.index(["rauc", "status", "mark-bad", "booted"]) < calls.index(
        ["systemctl", "reboot"]
    )


def config_with_model(tmp_path: Path, api_port: int | None = None) -> MoltbotConfig:
    installed_registry(tmp_path / "models")
    return MoltbotConfig.model_validate(
        {
            "device": {"data_dir": str(tmp_path), "board": "generic-x86_64"},
            "api": {"enabled": api_port is not None, "port": api_port or 8080},
        }
    )


def test_the_gate_s_checks_are_the_self_test_s(tmp_path: Path) -> None:
    config = config_with_model(tmp_path, api_port=free_port())
    checks = {check.name: check for check in boot_health_checks(config)}
    assert list(checks) == ["service", "reference inference", "system"]
    reference = checks["reference inference"].run(60)
    assert reference.passed, reference.detail
    assert reference.detail.startswith("defect@1 on ort-cpu")
    service = checks["service"].run(1)
    assert not service.passed
    assert not service.final, "a service still starting may be ready in the next round"
    assert service.detail.startswith("/readyz:")


def test_a_model_whose_outputs_drifted_fails_the_gate_for_good(tmp_path: Path) -> None:
    config = config_with_model(tmp_path)
    folder = tmp_path / "models" / "defect" / "1"
    manifest = json.loads((folder / "manifest.json").read_text())
    for variant in manifest["variants"].values():
        reference = folder / variant["reference_output"]
        np.save(reference, np.roll(np.load(reference), 1, axis=1))
    [check] = [c for c in boot_health_checks(config) if c.name == "reference inference"]
    result = check.run(60)
    assert not result.passed
    assert result.final


def unit_sections() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return parser


def test_the_unit_runs_after_the_appliance_and_does_not_wait_on_itself() -> None:
    unit = unit_sections()
    assert set(unit["Unit"]["After"].split()) >= {"moltbot.service", "moltbot-selftest.service"}
    assert "Requires" not in unit["Unit"], "a failed appliance must still be gated (marked bad)"
    service = unit["Service"]
    assert service["ExecStart"].endswith("moltbot system confirm-boot")
    assert service["Type"] == "exec", "a oneshot keeps is-system-running at 'starting'"
    with pytest.raises(ValidationError):  # no deadline the config allows reaches the limit
        UpdateSettings(health_gate_deadline_s=float(service["RuntimeMaxSec"]))


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: `make test` installs Debian's systemd package")
    moltbot = Path(sys.executable).with_name("moltbot")
    local = tmp_path / UNIT.name
    local.write_text(UNIT.read_text().replace("/opt/moltbot/venv/bin/moltbot", str(moltbot)))
    result = subprocess.run(
        [analyze, "verify", str(local)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr
