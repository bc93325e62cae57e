"""The RAUC client: parsing what rauc 1.8 prints, and turning its failures into typed errors.

Every JSON document, progress line and error message below was captured from real rauc 1.8
runs (Debian bookworm's ``rauc 1.8-2``) on this host: a private ``dbus-daemon`` session bus,
``rauc service --override-boot-slot=…`` with file-backed ext4 slots, once with
``bootloader=custom`` and once with ``bootloader=uboot`` over a file-backed U-Boot environment
(``fw_env.config`` pointing at a 16 KiB file). ``tests/integration/test_update_rauc_host.py``
runs that setup for real. Here a stand-in ``rauc`` replays the captured output
(``tests/support/rauc.py``), because the real one needs the RAUC D-Bus service, and unit tests
start no services.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.errors import DependencyMissingError
from edge.update.errors import BootStateError, RaucError
from edge.update.rauc import (
    InstallProgress,
    RaucClient,
    parse_bundle_info,
    parse_fw_env,
    parse_progress_line,
    parse_status,
)
from tests.support.rauc import (
    FW_ENV_ON_TRIAL,
    INFO,
    INSTALL_INCOMPATIBLE,
    INSTALL_OK,
    MARK_GOOD_FW_ENV_BROKEN,
    NO_DBUS_SERVICE,
    STATUS_AFTER_INSTALL,
    STATUS_BOOTED_B,
    STATUS_BOOTLOADER_UNREADABLE,
    FakeTools,
)


@pytest.fixture
def tools(tmp_path: Path) -> FakeTools:
    return FakeTools(tmp_path / "bin")


def test_status_after_an_install_shows_the_new_version_in_the_other_slot() -> None:
    report = parse_status(STATUS_AFTER_INSTALL)
    assert report.compatible == "moltbot-test"
    assert report.booted == "A"
    assert report.boot_primary == "rootfs.1"
    booted = report.booted_slot()
    assert booted is not None
    assert (booted.name, booted.bootname, booted.boot_status) == ("rootfs.0", "A", "good")
    assert booted.bundle_version is None, "a slot never written by RAUC has no bundle"
    other = report.slots[0]
    assert (other.name, other.state, other.boot_status) == ("rootfs.1", "inactive", "bad")
    assert (other.bundle_version, other.bundle_compatible) == ("2.0.0", "moltbot-test")
    assert other.installed_at == "2026-12-05T04:29:31Z"
    assert report.problems == ()


def test_a_slot_booted_with_attempts_counted_down_is_on_trial() -> None:
    report = parse_status(STATUS_BOOTED_B, parse_fw_env(FW_ENV_ON_TRIAL))
    booted = report.booted_slot()
    assert booted is not None
    assert (booted.name, booted.attempts_left, booted.boot_status) == ("rootfs.1", 2, "good")
    assert report.boot_order == ("B", "A")
    assert report.awaiting_confirmation(attempts_max=3)


def test_attempt_counters_are_read_as_hexadecimal_like_u_boot_writes_them() -> None:
    env = parse_fw_env("BOOT_A_LEFT=a\nBOOT_B_LEFT=f\nBOOT_ORDER=B A\n")
    report = parse_status(STATUS_BOOTED_B, env)
    assert [slot.attempts_left for slot in report.slots] == [15, 10, None]
    assert report.awaiting_confirmation(attempts_max=15) is False


def test_a_slot_marked_good_has_its_attempts_back_and_is_not_on_trial() -> None:
    env = parse_fw_env("BOOT_A_LEFT=3\nBOOT_B_LEFT=3\nBOOT_ORDER=B A\n")
    assert not parse_status(STATUS_BOOTED_B, env).awaiting_confirmation(attempts_max=3)


def test_a_booted_slot_the_bootloader_calls_bad_is_on_trial_without_the_env() -> None:
    report = parse_status(STATUS_BOOTLOADER_UNREADABLE)
    assert report.awaiting_confirmation()


def test_a_slot_without_bootname_has_no_boot_status_and_no_attempts() -> None:
    report = parse_status(STATUS_BOOTED_B, parse_fw_env(FW_ENV_ON_TRIAL))
    appfs = report.slots[2]
    assert (appfs.name, appfs.slot_class, appfs.bootname) == ("appfs.0", "appfs", None)
    assert appfs.boot_status is None
    assert appfs.attempts_left is None
    assert [slot.name for slot in report.rootfs_slots()] == ["rootfs.1", "rootfs.0"]


def test_an_unreadable_bootloader_is_reported_as_a_problem_not_hidden() -> None:
    report = parse_status(STATUS_BOOTLOADER_UNREADABLE)
    assert report.boot_primary is None
    assert any("cannot read the bootloader" in problem for problem in report.problems)


def test_the_report_round_trips_to_json() -> None:
    data = parse_status(STATUS_BOOTED_B, parse_fw_env(FW_ENV_ON_TRIAL)).to_json()
    assert json.loads(json.dumps(data))["slots"][0]["attempts_left"] == 2


def test_status_json_of_another_shape_is_a_rauc_error() -> None:
    with pytest.raises(RaucError, match="another shape"):
        parse_status('{"compatible": "x", "slots": {"rootfs.0": {}}}')
    with pytest.raises(RaucError):
        parse_status("rauc-Message: not json")


def test_bundle_info_gives_compatible_and_version() -> None:
    info = parse_bundle_info(INFO)
    assert (info.compatible, info.version, info.build) == ("moltbot-test", "2.0.0", "20240101")


def test_progress_lines_are_parsed_and_other_lines_ignored() -> None:
    steps = [parse_progress_line(line) for line in INSTALL_OK.splitlines()]
    found = [step for step in steps if step is not None]
    assert found[0] == InstallProgress(0, "Installing")
    assert InstallProgress(90, "Copying image to rootfs.1") in found
    assert found[-1] == InstallProgress(100, "Installing done.")
    assert steps[0] is None and steps[-1] is None
    assert parse_progress_line("250% nonsense") is None


def test_fw_printenv_output_leaves_out_empty_variables() -> None:
    assert parse_fw_env("BOOT_A_LEFT=3\nNOPE=\nBOOT_ORDER=A B\n") == {
        "BOOT_A_LEFT": "3",
        "BOOT_ORDER": "A B",
    }


def test_status_reads_the_attempts_of_each_bootname_from_the_uboot_env(
    tools: FakeTools, tmp_path: Path
) -> None:
    rauc = tools.tool("rauc", {"args": ["status", "--detailed"], "stdout": STATUS_BOOTED_B})
    fw = tools.tool("fw_printenv", {"args": ["-c"], "stdout": FW_ENV_ON_TRIAL})
    client = RaucClient(
        rauc=rauc,
        system_conf=tmp_path / "system.conf",
        fw_printenv=fw,
        fw_env_config=tmp_path / "fw_env.config",
    )
    report = client.status()
    assert report.booted_slot() is not None
    assert [slot.attempts_left for slot in report.slots] == [2, 3, None]
    assert tools.calls() == [
        [
            "rauc",
            f"--conf={tmp_path / 'system.conf'}",
            "status",
            "--detailed",
            "--output-format=json",
        ],
        [
            "fw_printenv",
            "-c",
            str(tmp_path / "fw_env.config"),
            "BOOT_B_LEFT",
            "BOOT_A_LEFT",
            "BOOT_ORDER",
        ],
    ]


def test_a_broken_fw_env_config_leaves_attempts_unknown_and_says_why(tools: FakeTools) -> None:
    rauc = tools.tool("rauc", {"args": ["status"], "stdout": STATUS_BOOTED_B})
    fw = tools.tool(
        "fw_printenv", {"args": [], "stderr": "Configuration file wrong or corrupted\n", "rc": 247}
    )
    report = RaucClient(rauc=rauc, fw_printenv=fw).status()
    assert all(slot.attempts_left is None for slot in report.slots)
    assert report.problems == (
        "fw_printenv failed (Configuration file wrong or corrupted): check /etc/fw_env.config",
    )


def test_a_missing_fw_printenv_names_its_package(tools: FakeTools, tmp_path: Path) -> None:
    rauc = tools.tool("rauc", {"args": ["status"], "stdout": STATUS_BOOTED_B})
    report = RaucClient(rauc=rauc, fw_printenv=str(tmp_path / "no-fw_printenv")).status()
    assert "libubootenv-tool" in report.problems[0]


def test_status_without_the_rauc_service_points_at_the_service(tools: FakeTools) -> None:
    rauc = tools.tool("rauc", {"args": ["status"], "stderr": NO_DBUS_SERVICE, "rc": 1})
    with pytest.raises(RaucError) as caught:
        RaucClient(rauc=rauc, fw_printenv=None).status()
    assert "Could not connect" in str(caught.value)
    assert "rauc-service" in str(caught.value)


def test_mark_good_failing_in_fw_setenv_is_loud_with_rauc_s_words_and_a_hint(
    tools: FakeTools,
) -> None:
    rauc = tools.tool(
        "rauc", {"args": ["status", "mark-good"], "stderr": MARK_GOOD_FW_ENV_BROKEN, "rc": 1}
    )
    with pytest.raises(BootStateError) as caught:
        RaucClient(rauc=rauc).mark_good()
    message = str(caught.value)
    assert "could not mark slot 'booted' as good" in message
    assert "Failed to run fw_setenv: Child process exited with code 247" in message
    assert "/etc/fw_env.config" in message
    assert caught.value.exit_code == 1
    assert "rauc mark: Failed marking slot rootfs.1 as good" in caught.value.output


def test_mark_bad_asks_rauc_for_the_booted_slot(tools: FakeTools) -> None:
    rauc = tools.tool(
        "rauc",
        {
            "args": ["status", "mark-bad", "booted"],
            "stdout": "rauc status: marked slot rootfs.1 as bad\n",
        },
    )
    RaucClient(rauc=rauc).mark_bad()
    assert tools.calls() == [["rauc", "status", "mark-bad", "booted"]]


def test_install_hands_on_each_progress_line(tools: FakeTools, tmp_path: Path) -> None:
    rauc = tools.tool("rauc", {"args": ["install"], "stdout": INSTALL_OK})
    seen: list[InstallProgress] = []
    RaucClient(rauc=rauc).install(tmp_path / "v2.raucb", progress=seen.append)
    assert len(seen) == 18
    assert seen[-1] == InstallProgress(100, "Installing done.")


def test_a_refused_install_says_rauc_s_last_error(tools: FakeTools, tmp_path: Path) -> None:
    rauc = tools.tool("rauc", {"args": ["install"], "stdout": INSTALL_INCOMPATIBLE, "rc": 1})
    with pytest.raises(RaucError) as caught:
        RaucClient(rauc=rauc).install(tmp_path / "other.raucb")
    assert caught.value.what == (
        "rauc could not install the bundle: Installation error: Compatible mismatch: "
        "Expected 'moltbot-test' but bundle manifest has 'other-board'"
    )
    assert "100% Installing failed." in caught.value.output
    assert str(tmp_path / "other.raucb") in str(caught.value)


def test_a_missing_rauc_names_the_debian_packages(tmp_path: Path) -> None:
    client = RaucClient(rauc=str(tmp_path / "no-rauc"))
    with pytest.raises(DependencyMissingError, match="rauc-service"):
        client.status()
    with pytest.raises(DependencyMissingError):
        client.install(tmp_path / "v2.raucb")


def test_an_install_without_the_rauc_service_points_at_the_service(
    tools: FakeTools, tmp_path: Path
) -> None:
    said = (
        "Failed GDBus.Error:org.freedesktop.DBus.Error.ServiceUnknown: The name "
        "de.pengutronix.rauc was not provided by any .service files\n"
        "D-Bus error while installing `/tmp/rauclab/v2.raucb`\n"
    )
    rauc = tools.tool("rauc", {"args": ["install"], "stderr": said, "rc": 2})
    with pytest.raises(RaucError) as caught:
        RaucClient(rauc=rauc).install(tmp_path / "v2.raucb")
    assert "D-Bus error while installing" in str(caught.value)
    assert "systemctl status rauc" in str(caught.value)
