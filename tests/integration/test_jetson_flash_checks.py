"""The Jetson bundle's flash.sh, run for real against folders laid out like NVIDIA's BSP.

NVIDIA's flash tools, its sample root file system and a Jetson in recovery mode cannot exist
here: the BSP is a stand-in (the files flash.sh checks for, an os-release for the sample rootfs,
shell scripts that record their arguments), lsusb is a stand-in script named by MOLTBOT_LSUSB,
df is a stand-in named by MOLTBOT_DF (so the room check does not depend on this host's disk),
and the bundle's install step is a recording stand-in (tests/integration/test_jetson_bundle_build.py
runs the real one in an arm64 tree). What is tested is our script: every check refuses with a
message that says what to do, nothing is touched before all checks pass, and a flash run keeps
NVIDIA's rootfs, calls apply_binaries.sh, our install step and NVIDIA's flash in that order with
the board's config, and keeps a log.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from edge.board import load_board_profiles
from images.jetson import FLASH_SCRIPT, OVERLAY_TARBALL, bundle_env
from images.jetson_target import target_for

pytestmark = pytest.mark.integration


def make_bundle(folder: Path, board: str = "jetson-agx-orin", *, data_mib: int = 1024) -> Path:
    folder.mkdir()
    staging = folder / "staging"
    (staging / "etc").mkdir(parents=True)
    (staging / "etc" / "hostname").write_text("moltbot\n")
    with tarfile.open(folder / "overlay.tar", "w") as archive:
        archive.add(staging, arcname=".")
    subprocess.run(
        ["zstd", "-q", "--rm", str(folder / "overlay.tar"), "-o", str(folder / OVERLAY_TARBALL)],
        check=True,
    )
    profile = load_board_profiles()[board]
    (folder / "bundle.env").write_text(
        bundle_env("test-bundle", profile, target_for(profile), 1200, data_mib, 1)
    )
    (folder / "flash.sh").write_bytes(FLASH_SCRIPT.read_bytes())
    (folder / "flash.sh").chmod(0o755)
    # The install step, recording how flash.sh calls it (the real one needs an arm64 tree).
    install = folder / "install-appliance.sh"
    install.write_text('#!/bin/sh\necho "install-appliance.sh $*" >> "$(dirname "$2")/calls.log"\n')
    install.chmod(0o755)
    sums = "".join(
        f"{hashlib.sha256((folder / name).read_bytes()).hexdigest()}  {name}\n"
        for name in (OVERLAY_TARBALL, "bundle.env", "install-appliance.sh")
    )
    (folder / "SHA256SUMS").write_text(sums)
    return folder


UBUNTU_OF_RELEASE = {"36": "22.04", "35": "20.04"}


def make_bsp(
    folder: Path,
    release: str = "36.4.0",
    board_config: str = "jetson-agx-orin-devkit",
    *,
    ubuntu: str | None = "",
) -> Path:
    """A BSP-shaped folder; its rootfs/ holds a sample root file system's os-release of
    ``ubuntu`` (default: the release's own; None: no sample rootfs unpacked)."""
    bsp = folder / "Linux_for_Tegra"
    (bsp / "tools/kernel_flash").mkdir(parents=True)
    (bsp / "nv_tegra/l4t_deb_packages").mkdir(parents=True)
    (bsp / "rootfs").mkdir()
    (bsp / "rootfs" / "README.txt").write_text("NVIDIA's placeholder\n")
    if ubuntu is not None:
        version = ubuntu or UBUNTU_OF_RELEASE[release.split(".", maxsplit=1)[0]]
        (bsp / "rootfs/etc").mkdir()
        (bsp / "rootfs/etc/os-release").write_text(
            f'NAME="Ubuntu"\nVERSION_ID="{version}"\nID=ubuntu\nID_LIKE=debian\n'
        )
        (bsp / "rootfs/etc/nvidia-sample-file").write_text("NVIDIA's own\n")
    (bsp / f"nv_tegra/l4t_deb_packages/nvidia-l4t-core_{release}-20240912212859_arm64.deb").touch()
    (bsp / f"{board_config}.conf").write_text("# board config\n")
    calls = bsp / "calls.log"
    for script in ("flash.sh", "apply_binaries.sh", "tools/kernel_flash/l4t_initrd_flash.sh"):
        path = bsp / script
        # Records NVIDIA's A/B switch too: ROOTFS_AB in the tool's environment.
        path.write_text(
            f'#!/bin/sh\necho "${{ROOTFS_AB:+ROOTFS_AB=$ROOTFS_AB }}{script} $*" >> "{calls}"\n'
        )
        path.chmod(0o755)
    return bsp


def fake_lsusb(folder: Path, line: str) -> Path:
    tool = folder / "lsusb"
    tool.write_text(
        "#!/bin/sh\n"
        "echo 'Bus 001 Device 002: ID 1d6b:0002 Linux Foundation 2.0 root hub'\n"
        f"echo '{line}'\n"
    )
    tool.chmod(0o755)
    return tool


ORIN_IN_RECOVERY = "Bus 003 Device 009: ID 0955:7023 NVIDIA Corp. APX"

ROOMY_HOST_MIB = 200 * 1024


def fake_df(folder: Path, free_mib: int) -> Path:
    """A df that answers ``df --output=avail -k PATH`` with ``free_mib`` free, whatever PATH."""
    tool = folder / f"df-{free_mib}"
    tool.write_text(f"#!/bin/sh\necho '   Avail'\necho '{free_mib * 1024}'\n")
    tool.chmod(0o755)
    return tool


def flash(
    bundle: Path, bsp: Path, lsusb: Path, *args: str, free_mib: int = ROOMY_HOST_MIB
) -> subprocess.CompletedProcess[str]:
    """Runs the bundle's flash.sh on a host with ``free_mib`` free next to the BSP."""
    df = fake_df(lsusb.parent, free_mib)
    return subprocess.run(
        [str(bundle / "flash.sh"), str(bsp), *args],
        capture_output=True,
        text=True,
        env=os.environ | {"MOLTBOT_LSUSB": str(lsusb), "MOLTBOT_DF": str(df)},
        check=False,
        timeout=120,
    )


def test_every_check_passes_for_the_right_bsp_and_a_board_in_recovery(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    result = flash(
        bundle, make_bsp(tmp_path), fake_lsusb(tmp_path, ORIN_IN_RECOVERY), "--check-only"
    )
    assert result.returncode == 0, result.stdout
    assert "BSP release R36 matches" in result.stdout
    assert "every check passed" in result.stdout
    assert list(bundle.glob("flash-*.log")), "no log of the run"


def test_wrong_bsp_release_is_refused_naming_both_releases(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    bsp = make_bsp(tmp_path, release="35.5.0")
    result = flash(bundle, bsp, fake_lsusb(tmp_path, ORIN_IN_RECOVERY), "--yes")
    assert result.returncode == 3
    assert (
        "BSP is Jetson Linux R35 but this bundle was built for R36 (JetPack 6.2)" in result.stdout
    )
    assert not (bsp / "calls.log").exists(), "NVIDIA's tools ran despite a failed check"
    assert (bsp / "rootfs" / "etc/os-release").exists(), "the BSP was changed"


def test_a_bsp_without_its_sample_root_file_system_is_refused_saying_what_to_unpack(
    tmp_path: Path,
) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    bsp = make_bsp(tmp_path, ubuntu=None)
    result = flash(bundle, bsp, fake_lsusb(tmp_path, ORIN_IN_RECOVERY), "--yes")
    assert result.returncode == 3
    assert f"no sample root file system in {bsp}/rootfs" in result.stdout
    assert "Tegra_Linux_Sample-Root-Filesystem_R36.4" in result.stdout
    assert not (bsp / "calls.log").exists(), "NVIDIA's tools ran despite a failed check"


def test_a_sample_root_file_system_of_the_wrong_ubuntu_release_is_refused(
    tmp_path: Path,
) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    bsp = make_bsp(tmp_path, ubuntu="20.04")
    result = flash(bundle, bsp, fake_lsusb(tmp_path, ORIN_IN_RECOVERY), "--yes")
    assert result.returncode == 3
    assert "is ubuntu 20.04, but JetPack 6.2 needs NVIDIA's Ubuntu 22.04 sample" in result.stdout
    assert not (bsp / "calls.log").exists()


def test_missing_recovery_device_is_refused_with_how_to_enter_recovery(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    result = flash(
        bundle,
        make_bsp(tmp_path),
        fake_lsusb(tmp_path, "Bus 002 Device 003: ID 046d:c52b Logitech"),
        "--check-only",
    )
    assert result.returncode == 3
    assert (
        "no jetson-agx-orin in recovery mode on USB (looked for 0955:7023 0955:7045)"
        in result.stdout
    )
    assert "hold REC, press RESET" in result.stdout


def test_missing_bsp_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    bsp = make_bsp(tmp_path)
    (bsp / "apply_binaries.sh").unlink()
    result = flash(bundle, bsp, fake_lsusb(tmp_path, ORIN_IN_RECOVERY), "--check-only")
    assert result.returncode == 3
    assert f"missing {bsp}/apply_binaries.sh" in result.stdout


def test_a_bundle_too_big_for_the_emmc_is_refused_before_anything_runs(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle", board="jetson-agx-xavier", data_mib=40_000)
    bsp = make_bsp(tmp_path, release="35.5.0", board_config="jetson-agx-xavier-devkit")
    result = flash(
        bundle,
        bsp,
        fake_lsusb(tmp_path, "Bus 003 Device 009: ID 0955:7019 NVIDIA Corp. APX"),
        "--check-only",
    )
    assert result.returncode == 3
    assert "do not fit the 32 GB eMMC" in result.stdout


@pytest.mark.parametrize("free_mib", [0, 1771, 12_000])
def test_a_host_without_room_to_install_and_flash_is_refused_before_anything_runs(
    tmp_path: Path, free_mib: int
) -> None:
    """Unpacking JetPack's packages and NVIDIA's flash images need room next to the BSP: short
    of it, the run stops before apply_binaries.sh, saying how much is free and how much needed."""
    bundle = make_bundle(tmp_path / "bundle")
    bsp = make_bsp(tmp_path)
    lsusb = fake_lsusb(tmp_path, ORIN_IN_RECOVERY)
    result = flash(bundle, bsp, lsusb, "--yes", free_mib=free_mib)
    assert result.returncode == 3
    assert f"only {free_mib} MiB free under {bsp}" in result.stdout
    assert "installing and flashing need" in result.stdout
    assert not (bsp / "calls.log").exists(), "NVIDIA's tools ran without room"


def test_room_to_install_and_flash_is_reported_when_there_is_enough(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    lsusb = fake_lsusb(tmp_path, ORIN_IN_RECOVERY)
    result = flash(bundle, make_bsp(tmp_path), lsusb, "--check-only", free_mib=20_000)
    assert result.returncode == 0, result.stdout
    assert "20000 MiB free for installing and flashing" in result.stdout


def test_a_corrupted_bundle_is_refused(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    with (bundle / OVERLAY_TARBALL).open("ab") as stream:
        stream.write(b"garbage")
    result = flash(
        bundle, make_bsp(tmp_path), fake_lsusb(tmp_path, ORIN_IN_RECOVERY), "--check-only"
    )
    assert result.returncode == 3
    assert "do not match SHA256SUMS" in result.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="a flash run unpacks as root (CI runs as root)")
def test_flash_run_keeps_nvidias_rootfs_and_installs_into_it_between_nvidias_tools(
    tmp_path: Path,
) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    bsp = make_bsp(tmp_path)
    lsusb = fake_lsusb(tmp_path, ORIN_IN_RECOVERY)
    for _ in range(2):
        result = flash(bundle, bsp, lsusb, "--yes")
        assert result.returncode == 0, result.stdout + result.stderr
    assert (bsp / "rootfs/etc/nvidia-sample-file").read_text() == "NVIDIA's own\n"
    calls = (bsp / "calls.log").read_text().splitlines()
    assert (
        calls
        == [
            "apply_binaries.sh ",
            f"install-appliance.sh --root {bsp}/rootfs",
            "tools/kernel_flash/l4t_initrd_flash.sh jetson-agx-orin-devkit internal",
        ]
        * 2
    )
    assert len(list(bundle.glob("flash-*.log"))) >= 1


def test_rootfs_ab_halves_the_room_each_root_file_system_has_and_says_so(tmp_path: Path) -> None:
    """With NVIDIA's rootfs A/B each of APP and APP_b holds a whole root file system (the data
    dir with it): a bundle that fits the eMMC once is refused for A/B, naming the slots."""
    bundle = make_bundle(tmp_path / "bundle", data_mib=30_000)
    bsp = make_bsp(tmp_path)
    lsusb = fake_lsusb(tmp_path, ORIN_IN_RECOVERY)
    assert flash(bundle, bsp, lsusb, "--check-only").returncode == 0
    result = flash(bundle, bsp, lsusb, "--check-only", "--rootfs-ab")
    assert result.returncode == 3, result.stdout
    assert "do not fit one of the two A/B root partitions" in result.stdout
    assert "NVIDIA's rootfs A/B (APP and APP_b, ROOTFS_AB=1)" in result.stdout
    assert not (bsp / "calls.log").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="a flash run unpacks as root (CI runs as root)")
def test_rootfs_ab_flash_passes_rootfs_ab_1_to_nvidias_flash_tool_only(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle")
    bsp = make_bsp(tmp_path)
    result = flash(bundle, bsp, fake_lsusb(tmp_path, ORIN_IN_RECOVERY), "--yes", "--rootfs-ab")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (bsp / "calls.log").read_text().splitlines() == [
        "apply_binaries.sh ",
        f"install-appliance.sh --root {bsp}/rootfs",
        "ROOTFS_AB=1 tools/kernel_flash/l4t_initrd_flash.sh jetson-agx-orin-devkit internal",
    ]
