"""One update from source to installed slot, and ``moltbot system update|slots`` as a user runs
them. RAUC is the stand-in of ``tests/support/rauc.py`` (replaying rauc 1.8's captured output;
the real one needs its D-Bus service), and so is ``systemctl``: no test reboots this host."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from edge.update.errors import RaucError, UpdateSourceError
from edge.update.install import DownloadMeter, UpdateStep, install_update
from edge.update.records import read_pending
from tests.support.rauc import (
    INFO,
    INSTALL_OK,
    STATUS_AFTER_INSTALL,
    STATUS_BOOTED_B,
    FakeRauc,
    FakeTools,
    run_moltbot,
)

BUNDLE = b"not a real bundle: the stand-in rauc does not read it" * 100


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    path = tmp_path / "moltbot-2.0.0.raucb"
    path.write_bytes(BUNDLE)
    return path


SHA = hashlib.sha256(BUNDLE).hexdigest()


def test_an_update_is_installed_and_its_bundle_removed(bundle: Path, tmp_path: Path) -> None:
    rauc, lines = FakeRauc(), list[str]()
    updates = tmp_path / "data" / "updates"
    result = install_update(str(bundle), SHA, updates, rauc, emit=lines.append, boot_id="boot-1")
    assert result.bundle.version == "2.0.0"
    assert result.next_slot == "rootfs.1"
    assert len(rauc.installed) == 1
    assert [p.name for p in updates.iterdir()] == ["pending.json"], "the bundle is removed"
    assert "install 100% Installing done." in lines
    assert any(line.startswith("installing version 2.0.0 (running: unknown") for line in lines)


def test_an_installed_update_records_where_the_next_boot_goes(bundle: Path, tmp_path: Path) -> None:
    updates = tmp_path / "updates"
    result = install_update(str(bundle), SHA, updates, FakeRauc(), emit=print, boot_id="boot-1")
    pending = read_pending(updates)
    assert pending is not None
    assert pending == result.pending
    assert (pending.from_slot, pending.to_slot) == ("rootfs.0", "rootfs.1")
    assert (pending.version, pending.sha256, pending.boot_id) == ("2.0.0", SHA, "boot-1")
    assert json.loads((updates / "pending.json").read_text())["to_slot"] == "rootfs.1"


def test_no_update_is_pending_when_the_next_boot_is_the_running_slot(
    bundle: Path, tmp_path: Path
) -> None:
    """RAUC configured not to activate what it installs: the next boot is the same slot."""
    rauc = FakeRauc(status_after=STATUS_BOOTED_B)  # booted B, and B is primary
    rauc.status_before = STATUS_BOOTED_B
    updates = tmp_path / "updates"
    result = install_update(str(bundle), SHA, updates, rauc, emit=print)
    assert result.pending is None
    assert read_pending(updates) is None


def test_a_failed_install_records_no_pending_update(bundle: Path, tmp_path: Path) -> None:
    updates = tmp_path / "updates"
    with pytest.raises(RaucError):
        install_update(str(bundle), SHA, updates, FakeRauc(fail_install=True), emit=print)
    assert read_pending(updates) is None


def test_progress_is_handed_on_as_steps_of_each_state(bundle: Path, tmp_path: Path) -> None:
    steps: list[UpdateStep] = []
    install_update(str(bundle), SHA, tmp_path / "u", FakeRauc(), emit=print, step=steps.append)
    states = [step.state for step in steps]
    assert states[0] == "downloading" and states[-1] == "installing"
    assert "verifying" in states
    assert states.index("verifying") < states.index("installing")
    assert steps[-1] == UpdateStep("installing", 100, "Installing done.")
    assert [s.percent for s in steps if s.state == "downloading"][-1] == 100


def test_a_bundle_for_another_board_is_refused_before_install_and_deleted(
    bundle: Path, tmp_path: Path
) -> None:
    rauc = FakeRauc(compatible="other-board")
    updates = tmp_path / "updates"
    with pytest.raises(UpdateSourceError, match="'other-board', this system is 'moltbot-test'"):
        install_update(str(bundle), SHA, updates, rauc, emit=lambda _: None)
    assert rauc.installed == []
    assert list(updates.iterdir()) == []


def test_a_failed_install_keeps_the_verified_bundle_for_the_next_try(
    bundle: Path, tmp_path: Path
) -> None:
    updates = tmp_path / "updates"
    with pytest.raises(RaucError):
        install_update(str(bundle), SHA, updates, FakeRauc(fail_install=True), emit=print)
    assert [p.suffix for p in updates.iterdir()] == [".raucb"]


def test_download_progress_is_printed_every_ten_percent() -> None:
    lines: list[str] = []
    meter = DownloadMeter(lines.append)
    for done in range(0, 1001, 7):
        meter.update(done, 1000)
    meter.update(1000, 1000)
    assert len(lines) == 11
    assert lines[-1].startswith("download 100%")


def moltbot(*args: str, path_dir: Path) -> subprocess.CompletedProcess[str]:
    return run_moltbot(*args, path_dir=path_dir, timeout_s=60)


@pytest.fixture
def device(tmp_path: Path) -> tuple[FakeTools, Path]:
    """Stand-in rauc/fw_printenv/systemctl on PATH and a config whose data dir is in tmp."""
    tools = FakeTools(tmp_path / "bin")
    tools.tool(
        "rauc",
        {"args": ["info"], "stdout": INFO},
        {"args": ["status", "--detailed"], "stdout": STATUS_AFTER_INSTALL},
        {"args": ["install"], "stdout": INSTALL_OK},
    )
    tools.tool(
        "fw_printenv", {"args": [], "stdout": "BOOT_A_LEFT=3\nBOOT_B_LEFT=3\nBOOT_ORDER=B A\n"}
    )
    tools.tool("systemctl", {"args": ["reboot"]})
    config = tmp_path / "config.yaml"
    config.write_text(f"device:\n  data_dir: {tmp_path / 'data'}\n")
    return tools, config


def test_system_update_no_reboot_installs_and_leaves_the_reboot_to_the_user(
    device: tuple[FakeTools, Path], bundle: Path
) -> None:
    tools, config = device
    result = moltbot(
        "--config",
        str(config),
        "system",
        "update",
        str(bundle),
        "--sha256",
        SHA,
        "--no-reboot",
        path_dir=tools.folder,
    )
    assert result.returncode == 0, result.stderr
    assert "install  90% Copying image to rootfs.1" in result.stdout
    assert "installed version 2.0.0; next boot: rootfs.1" in result.stdout
    assert [call[:2] for call in tools.calls()] == [
        ["rauc", "info"],
        ["rauc", "status"],
        ["fw_printenv", "BOOT_B_LEFT"],
        ["rauc", "install"],
        ["rauc", "status"],
        ["fw_printenv", "BOOT_B_LEFT"],
    ], "no systemctl reboot"


def test_system_update_reboots_through_systemctl(
    device: tuple[FakeTools, Path], bundle: Path
) -> None:
    tools, config = device
    result = moltbot(
        "--config",
        str(config),
        "system",
        "update",
        str(bundle),
        "--sha256",
        SHA,
        path_dir=tools.folder,
    )
    assert result.returncode == 0, result.stderr
    assert tools.calls()[-1] == ["systemctl", "reboot"]


def test_system_update_with_a_wrong_sha256_exits_1_and_installs_nothing(
    device: tuple[FakeTools, Path], bundle: Path
) -> None:
    tools, config = device
    wrong = hashlib.sha256(b"x").hexdigest()
    result = moltbot(
        "--config",
        str(config),
        "system",
        "update",
        str(bundle),
        "--sha256",
        wrong,
        path_dir=tools.folder,
    )
    assert result.returncode == 1
    assert "error: the bundle's sha256 is" in result.stderr
    assert tools.calls() == []


def test_system_update_with_a_malformed_sha256_exits_2(
    device: tuple[FakeTools, Path], bundle: Path
) -> None:
    tools, config = device
    result = moltbot(
        "--config",
        str(config),
        "system",
        "update",
        str(bundle),
        "--sha256",
        "abc",
        path_dir=tools.folder,
    )
    assert result.returncode == 2
    assert "--sha256 must be 64 hexadecimal digits" in result.stderr


def test_system_slots_prints_each_slot_and_json_on_request(
    device: tuple[FakeTools, Path],
) -> None:
    tools, _config = device
    tools.tool("rauc", {"args": ["status", "--detailed"], "stdout": STATUS_BOOTED_B})
    tools.tool(
        "fw_printenv", {"args": [], "stdout": "BOOT_A_LEFT=3\nBOOT_B_LEFT=2\nBOOT_ORDER=B A\n"}
    )
    table = moltbot("system", "slots", path_dir=tools.folder)
    assert table.returncode == 0, table.stderr
    assert "booted:     rootfs.1 (B)" in table.stdout
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()}
    assert rows["rootfs.1"] == ["rootfs.1", "B", "booted", "good", "2", "2.0.0"]
    assert rows["appfs.0"] == ["appfs.0", "-", "inactive", "-", "-", "-"]
    as_json = moltbot("system", "slots", "--json", path_dir=tools.folder)
    data = json.loads(as_json.stdout)
    assert data["booted"] == "B"
    assert data["slots"][0]["attempts_left"] == 2
    assert data["boot_order"] == ["B", "A"]
