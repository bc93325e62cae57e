"""Jetson AGX Orin and Xavier bundles, built for real from their recipes (one cached rootfs
serves both), inspected, and checked by their own flash.sh against a BSP-shaped folder."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from images.fleet import generate
from tests.integration.test_jetson_flash_checks import fake_lsusb, flash, make_bsp

pytestmark = [pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(3600)]
REPO = Path(__file__).parents[2]
BOARDS = {
    "jetson-agx-orin": ("36.4.0", "jetson-agx-orin-devkit", "0955:7023"),
    "jetson-agx-xavier": ("35.6.0", "jetson-agx-xavier-devkit", "0955:7019"),
}


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if os.geteuid() != 0:
        pytest.skip("building a rootfs needs root (CI runs as root)")
    from images.jetson import build_jetson_bundle

    out = tmp_path_factory.mktemp("jetson-out")
    from images.rootfs import default_cache_dir

    cache = default_cache_dir()  # shared with `make image`: the rootfs is built once
    built = {}
    for board in BOARDS:
        report = build_jetson_bundle(REPO / f"images/recipes/{board}.yaml", out, cache)
        built[board] = report.image.parent
    return built


def listing(bundle: Path) -> set[str]:
    names = subprocess.run(
        ["tar", "-I", "zstd", "-tf", str(bundle / "rootfs.tar.zst")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return {name.removeprefix("./") for name in names}


def member(bundle: Path, name: str) -> str:
    return subprocess.run(
        ["tar", "-I", "zstd", "-xOf", str(bundle / "rootfs.tar.zst"), f"./{name}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_bundle_rootfs_has_the_appliance_and_no_kernel_or_secrets(
    bundles: dict[str, Path], board: str
) -> None:
    bundle = bundles[board]
    files = listing(bundle)
    assert "opt/moltbot/venv/bin/moltbot" in files
    assert "etc/systemd/system/multi-user.target.wants/moltbot.service" in files
    assert "etc/systemd/system/moltbot.service.d/tegra-gpu.conf" in files
    assert "var/lib/moltbot/models/defect/1/manifest.json" in files
    assert not any(name.startswith("boot/vmlinuz") for name in files), "the BSP brings the kernel"
    assert not any(name.startswith("etc/ssh/ssh_host_") for name in files)
    for line in member(bundle, "etc/shadow").splitlines():
        assert line.split(":")[1].startswith(("*", "!")), line
    config = member(bundle, "etc/moltbot/config.yaml")
    assert f"board: {board}" in config
    env = (bundle / "bundle.env").read_text()
    release, board_config, _ = BOARDS[board]
    assert f"L4T_RELEASE={release.split('.')[0]}" in env and f"BOARD_CONFIG={board_config}" in env
    subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=bundle, check=True)


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_bundles_flash_script_accepts_the_matching_bsp_and_refuses_the_other(
    bundles: dict[str, Path], board: str, tmp_path: Path
) -> None:
    release, board_config, usb_id = BOARDS[board]
    lsusb = fake_lsusb(tmp_path, f"Bus 003 Device 009: ID {usb_id} NVIDIA Corp. APX")
    right = make_bsp(tmp_path / "right", release=release, board_config=board_config)
    result = flash(bundles[board], right, lsusb, "--check-only")
    assert result.returncode == 0, result.stdout
    other = next(r for b, (r, _, _) in BOARDS.items() if b != board)
    wrong = make_bsp(tmp_path / "wrong", release=other, board_config=board_config)
    assert flash(bundles[board], wrong, lsusb, "--check-only").returncode == 3


def test_bundles_and_fleet_project_carry_the_same_version_and_model_sha256s(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    fleet = json.loads(
        (
            generate(REPO / "images/recipes/jetson-agx-orin.yaml", tmp_path / "fleet")
            / "moltbot"
            / "manifest.json"
        ).read_text()
    )
    expected = {(m["name"], m["version"], m["sha256"]) for m in fleet["models"]}
    for bundle in bundles.values():
        manifest = json.loads((bundle / "manifest.json").read_text())
        assert manifest["builder_version"] == fleet["version"]
        assert {(m["name"], m["version"], m["sha256"]) for m in manifest["models"]} == expected
