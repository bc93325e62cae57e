"""The rpi4b image, built for real (mmdebstrap under qemu-user-static, cached rootfs), checked
statically with the real tools and booted under qemu-system-aarch64 -M virt.

The build runs once per session (tens of minutes cold, a few with the rootfs cached under
$MOLTBOT_IMAGE_CACHE or images/cache/). MOLTBOT_TEST_IMAGE_DIR points the tests at an image
already built (e.g. by `make image`) instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from images.configure import configure_image
from images.disk import read_table
from images.qemu import HOST_FROM_GUEST, QemuBoot
from tests.support.collector import Collector
from tests.support.mosquitto import MosquittoBroker, free_port

pytestmark = [pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(3600)]
REPO = Path(__file__).parents[2]
RECIPE = REPO / "images" / "recipes" / "rpi4b.yaml"
SECTOR = 512
API_TOKEN = "boot-test-token-0123456789abcdef"


@pytest.fixture(scope="session")
def built_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    prebuilt = os.environ.get("MOLTBOT_TEST_IMAGE_DIR")
    if prebuilt:
        return next(Path(prebuilt).glob("*.img"))
    if os.geteuid() != 0:
        pytest.skip("building an image needs root (CI runs as root); or set MOLTBOT_TEST_IMAGE_DIR")
    from images.build import build_image

    out = tmp_path_factory.mktemp("image-out")
    cache = Path(os.environ.get("MOLTBOT_IMAGE_CACHE", REPO / "images" / "cache"))
    report = build_image(RECIPE, out, cache)
    return report.image


def partition_bytes(image: Path, index: int, target: Path) -> Path:
    entry = read_table(image)["partitions"][index]  # type: ignore[index]
    with image.open("rb") as source, target.open("wb") as out:
        source.seek(entry["start"] * SECTOR)
        remaining = entry["size"] * SECTOR
        while remaining:
            block = source.read(min(remaining, 8 << 20))
            out.write(block)
            remaining -= len(block)
    return target


@pytest.fixture(scope="session")
def partitions(built_image: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("partitions")
    return {
        name: partition_bytes(built_image, index, folder / f"{name}.img")
        for index, name in enumerate(("boot", "root", "data"))
    }


def debugfs_cat(partition: Path, path: str) -> bytes:
    return subprocess.run(
        ["debugfs", "-R", f"cat {path}", str(partition)], capture_output=True, check=True
    ).stdout


def mtype(partition: Path, path: str) -> str:
    return subprocess.run(
        ["mtype", "-i", str(partition), f"::{path}"], capture_output=True, text=True, check=True
    ).stdout


def test_outputs_are_complete_and_their_checksums_match(built_image: Path) -> None:
    out = built_image.parent
    for name in (
        f"{built_image.name}.xz",
        f"{built_image.name}.bmap",
        "manifest.json",
        "sbom.cdx.json",
        "SHA256SUMS",
        "build-report.json",
    ):
        assert (out / name).is_file(), name
    subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=out, check=True)
    subprocess.run(["xz", "--test", str(out / f"{built_image.name}.xz")], check=True)
    report = json.loads((out / "build-report.json").read_text())
    assert report["sizes_bytes"]["image"] == built_image.stat().st_size


def test_sbom_is_valid_cyclonedx_and_matches_the_manifest(built_image: Path) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    sbom_text = (built_image.parent / "sbom.cdx.json").read_text()
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(sbom_text)
    assert errors is None, errors
    manifest = json.loads((built_image.parent / "manifest.json").read_text())
    counted = len(manifest["debian_packages"]) + len(manifest["wheels"]) + len(manifest["models"])
    assert len(json.loads(sbom_text)["components"]) == counted


def test_partition_table_and_file_systems_are_clean(
    built_image: Path, partitions: dict[str, Path]
) -> None:
    table = read_table(built_image)
    assert table["label"] == "dos"
    assert [p["type"] for p in table["partitions"]] == ["c", "83", "83"]  # type: ignore[index]
    subprocess.run(["fsck.vfat", "-n", str(partitions["boot"])], check=True, capture_output=True)
    for name in ("root", "data"):
        subprocess.run(["e2fsck", "-fn", str(partitions[name])], check=True, capture_output=True)


def test_boot_partition_boots_the_images_kernel_from_the_real_root_partuuid(
    built_image: Path, partitions: dict[str, Path]
) -> None:
    table = read_table(built_image)
    root_partuuid = f"{str(table['id']).removeprefix('0x')}-02"
    cmdline = mtype(partitions["boot"], "cmdline.txt")
    assert f"root=PARTUUID={root_partuuid}" in cmdline
    config = mtype(partitions["boot"], "config.txt")
    assert "arm_64bit=1" in config
    listing = subprocess.run(
        ["mdir", "-b", "-i", str(partitions["boot"]), "::"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    kernel = re.search(r"^kernel=(\S+)", config, re.MULTILINE)
    initrd = re.search(r"^initramfs (\S+)", config, re.MULTILINE)
    assert kernel and initrd
    for name in (
        "start4.elf",
        "fixup4.dat",
        "bcm2711-rpi-4-b.dtb",
        kernel.group(1),
        initrd.group(1),
    ):
        assert f"::/{name}" in listing, name
    fstab = debugfs_cat(partitions["root"], "/etc/fstab").decode()
    assert f"PARTUUID={root_partuuid}  /  ext4" in fstab
    assert "/var/lib/moltbot  ext4" in fstab


def test_manifest_sha256s_match_the_files_inside_the_image(
    built_image: Path, partitions: dict[str, Path]
) -> None:
    manifest = json.loads((built_image.parent / "manifest.json").read_text())
    debs = {p["name"] for p in manifest["debian_packages"]}
    assert {"linux-image-arm64", "raspi-firmware", "openssh-server", "python3"} <= debs
    wheels = {w["name"].lower() for w in manifest["wheels"]}
    assert {"moltbot-edge", "onnxruntime", "vosk", "numpy", "fastapi", "paho-mqtt"} <= wheels
    assert manifest["models"], "no models recorded"
    registry = json.loads(debugfs_cat(partitions["data"], "/models/defect/1/manifest.json"))
    for entry in manifest["models"]:
        precision = entry["name"].rsplit("-", 1)[1]
        inside = debugfs_cat(
            partitions["data"], f"/models/defect/1/{registry['variants'][precision]['file']}"
        )
        assert hashlib.sha256(inside).hexdigest() == entry["sha256"]


def test_image_has_no_password_and_no_shared_host_keys(partitions: dict[str, Path]) -> None:
    shadow = debugfs_cat(partitions["root"], "/etc/shadow").decode()
    for line in shadow.splitlines():
        user, password = line.split(":")[:2]
        assert password in ("*", "!", "!*") or password.startswith("!"), user
    sshd = debugfs_cat(partitions["root"], "/etc/ssh/sshd_config.d/moltbot.conf").decode()
    assert "PasswordAuthentication no" in sshd
    listing = subprocess.run(
        ["debugfs", "-R", "ls -l /etc/ssh", str(partitions["root"])],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "ssh_host_" not in listing
    assert debugfs_cat(partitions["root"], "/etc/machine-id") == b""


def defect_frame(path: Path) -> Path:
    from models.defect.dataset import make_image

    rng = np.random.default_rng(7)
    Image.fromarray(make_image("scratch", rng)).save(path)
    return path


@pytest.fixture
def booted(built_image: Path, tmp_path: Path, mosquitto: MosquittoBroker) -> tuple[QemuBoot, float]:
    image = tmp_path / "boot.img"
    shutil.copyfile(built_image, image)
    with image.open("r+b") as stream:  # a bigger card: first boot grows the data partition
        stream.truncate(image.stat().st_size + 512 * 2**20)
    site = tmp_path / "site.yaml"
    site.write_text(
        yaml.safe_dump(
            {
                "device": {"id": "boot-test-01", "name": "QEMU boot test"},
                "uplink": {"host": HOST_FROM_GUEST, "port": mosquitto.port, "protocol": "5"},
                "api": {"token": API_TOKEN},
                "system": {"hostname": "line3-press"},
            }
        )
    )
    configure_image(image, site)
    boot = QemuBoot(image, tmp_path, api_port=free_port())
    boot.start()
    yield boot, boot.started_at  # type: ignore[misc]
    boot.stop()
    console = boot.console()
    (REPO / "images" / "out").mkdir(parents=True, exist_ok=True)
    (REPO / "images" / "out" / "last-boot-console.log").write_text(console)


def test_image_boots_serves_health_passes_its_selftest_and_publishes_to_the_host_broker(
    booted: tuple[QemuBoot, float], mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    boot, started = booted
    collector = Collector("127.0.0.1", mosquitto.port, "moltbot/#", client_id="boot-test")
    try:
        verdict = boot.wait_for(r"MOLTBOT-SELFTEST: (PASS|FAIL)\b", timeout_s=1500)
        console = boot.console()
        assert verdict is not None, f"no self-test verdict; console ends:\n{console[-4000:]}"
        assert verdict.group(1) == "PASS", "\n".join(
            line for line in console.splitlines() if "MOLTBOT-SELFTEST" in line
        )
        assert "MOLTBOT-SELFTEST: ok reference inference" in console
        assert "MOLTBOT-SELFTEST: ok system: running" in console  # booted, no failed unit
        assert "line3-press login:" in console, "the site file's host name was not applied"
        data_mib = re.search(r"ok storage: /var/lib/moltbot (\d+) MiB", console)
        assert data_mib and int(data_mib.group(1)) > 1400, "first boot did not grow the data fs"

        base = f"http://127.0.0.1:{boot.api_port}"
        with urllib.request.urlopen(f"{base}/healthz", timeout=30) as response:  # noqa: S310
            assert response.status == 200
        healthy_after_s = time.monotonic() - started

        assert collector.wait_for(
            lambda got: any(m.topic.endswith("/status") and b"online" in m.payload for m in got),
            60,
        ), "the appliance never announced itself online to the host broker"
        frame = defect_frame(tmp_path / "scratch.png").read_bytes()
        request = urllib.request.Request(  # noqa: S310 - loopback
            f"{base}/v1/infer?trigger=true",
            data=frame,
            headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "image/png"},
            method="POST",
        )
        for _ in range(3):  # the default debounce fires on 2 hits out of 3 frames
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
                result = json.loads(response.read())
            assert result["label"] == "scratch", result
        assert collector.wait_for(
            lambda got: any("/boot-test-01/defect" in m.topic for m in got), 60
        ), f"no defect event reached the broker: {[m.topic for m in collector.messages]}"
        event = next(m for m in collector.messages if m.topic.endswith("/defect")).json()
        assert event["data"]["class"] == "scratch", event
        print(f"boot to /healthz under TCG: {healthy_after_s:.0f} s")  # noqa: T201
    finally:
        collector.close()
