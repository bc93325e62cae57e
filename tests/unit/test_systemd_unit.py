"""The shipped systemd unit: hardened, notify + watchdog, and clean for systemd-analyze."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).parents[2] / "edge" / "units"
UNIT = UNITS / "moltbot.service"


def unit_options() -> dict[str, str]:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT)
    return dict(parser["Service"])


def test_unit_runs_unprivileged_hardened_with_notify_and_watchdog() -> None:
    service = unit_options()
    assert service["Type"] == "notify"
    assert service["User"] == "moltbot"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["ReadWritePaths"] == "/var/lib/moltbot"
    assert service["WatchdogSec"] == "60"
    assert service["Restart"] == "on-failure"


@pytest.mark.parametrize(
    "name",
    [
        "moltbot.service",
        "moltbot-setup.service",
        "moltbot-selftest.service",
        "moltbot-confirm-boot.service",
        "moltbot-reboot.service",
    ],
)
def test_systemd_analyze_verify_passes(tmp_path: Path, name: str) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: `make test` installs Debian's systemd package")
    # The unit names the image's venv; point it at this one so verify can check the binary.
    moltbot = Path(sys.executable).with_name("moltbot")
    local = tmp_path / name
    local.write_text(
        (UNITS / name).read_text().replace("/opt/moltbot/venv/bin/moltbot", str(moltbot))
    )
    result = subprocess.run(
        [analyze, "verify", str(local)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr


def test_selftest_runs_only_when_the_kernel_command_line_asks_for_it() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / "moltbot-selftest.service")
    assert parser["Unit"]["ConditionKernelCommandLine"] == "moltbot.selftest=1"
    assert parser["Service"]["User"] == "moltbot"


def test_setup_runs_before_the_appliance_ssh_and_networking() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / "moltbot-setup.service")
    before = parser["Unit"]["Before"].split()
    assert {"moltbot.service", "ssh.service", "systemd-networkd.service"} <= set(before)


def test_the_reboot_path_unit_watches_the_file_the_appliance_writes(tmp_path: Path) -> None:
    from edge.update.install import REBOOT_REQUEST, request_reboot

    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / "moltbot-reboot.path")
    watched = Path(parser["Path"]["PathExists"])
    assert watched == Path("/var/lib/moltbot/updates") / REBOOT_REQUEST
    assert parser["Path"]["Unit"] == "moltbot-reboot.service"
    service = (UNITS / "moltbot-reboot.service").read_text()
    assert f"rm -f {watched}" in service  # asked once, rebooted once
    request_reboot(tmp_path / "updates")
    assert [p.name for p in (tmp_path / "updates").iterdir()] == [REBOOT_REQUEST]
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None
    for name in ("moltbot-reboot.path", "moltbot-reboot.service"):
        (tmp_path / name).write_text((UNITS / name).read_text())
    result = subprocess.run(
        [analyze, "verify", str(tmp_path / "moltbot-reboot.path")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
