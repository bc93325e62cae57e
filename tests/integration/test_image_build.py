"""The rpi4b image, built for real (mmdebstrap under qemu-user-static, cached rootfs), checked
statically with the real tools and booted under qemu-system-aarch64 -M virt.

The build runs once per session (tens of minutes cold, a few with the rootfs cached under
$MOLTBOT_IMAGE_CACHE or ~/.cache/moltbot-image, the cache `make image` uses too).
MOLTBOT_TEST_IMAGE_DIR points the tests at an image already built (e.g. by `make image`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from images.boot_path import (
    KernelModules,
    check_boot_path,
    initramfs_compression,
    initramfs_modules,
    read_initramfs_listing,
)
from images.debugfs import cat as debugfs_cat
from images.debugfs import dump, link_target, names_in
from images.devicetree import DeviceTree
from images.disk import read_table
from images.qemu import HOST_FROM_GUEST, QemuBoot
from tests.support.ab_update import extract_partition
from tests.support.collector import Collector
from tests.support.models import defect_png
from tests.support.mosquitto import MosquittoBroker, free_port
from tests.support.qemu_image import RPI4B_RECIPE, GuestApi, configured_copy, keep_console
from tests.support.speech import speak

pytestmark = [pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(3600)]
REPO = Path(__file__).parents[2]
RECIPE = RPI4B_RECIPE
API_TOKEN = "boot-test-token-0123456789abcdef"


@pytest.fixture(scope="session")
def partitions(built_image: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("partitions")
    return {  # index 2 is root slot B: empty in a fresh image
        name: extract_partition(built_image, index, folder / f"{name}.img")
        for index, name in ((0, "boot"), (1, "root"), (3, "data"))
    }


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
        built_image.with_suffix(".raucb").name,
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
    assert [p["type"] for p in table["partitions"]] == ["c", "83", "83", "83"]
    subprocess.run(["fsck.vfat", "-n", str(partitions["boot"])], check=True, capture_output=True)
    for name in ("root", "data"):
        subprocess.run(["e2fsck", "-fn", str(partitions[name])], check=True, capture_output=True)


def test_boot_partition_starts_u_boot_whose_script_picks_a_root_slot(
    built_image: Path, partitions: dict[str, Path], tmp_path: Path
) -> None:
    from images.uboot_script import STATE_FILES, decode_environment

    config = mtype(partitions["boot"], "config.txt")
    assert "arm_64bit=1" in config
    assert re.search(r"^kernel=u-boot.bin$", config, re.MULTILINE)
    assert "initramfs" not in config  # the initrd comes from the slot
    listing = subprocess.run(
        ["mdir", "-b", "-i", str(partitions["boot"]), "::"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in ("start4.elf", "fixup4.dat", "bcm2711-rpi-4-b.dtb", "u-boot.bin", "boot.scr"):
        assert f"::/{name}" in listing, name
    assert "vmlinuz" not in listing and "initrd.img" not in listing  # kernels live in the slots
    for name in STATE_FILES:  # the state file and its copy
        state = tmp_path / name
        subprocess.run(
            ["mcopy", "-i", str(partitions["boot"]), f"::{name}", str(state)], check=True
        )
        assert decode_environment(state.read_bytes()) == {
            "BOOT_ORDER": "A B",
            "BOOT_A_LEFT": "3",
            "BOOT_B_LEFT": "3",
        }, name
    fstab = debugfs_cat(partitions["root"], "/etc/fstab").decode()
    assert "/dev/root  /  ext4" in fstab  # whichever slot U-Boot booted
    assert "/var/lib/moltbot  ext4" in fstab
    boot_listing = names_in(partitions["root"], "/boot")
    assert "vmlinuz" in boot_listing and "initrd.img" in boot_listing


def test_each_slot_trusts_only_the_update_ca_and_knows_both_slots(
    built_image: Path, partitions: dict[str, Path]
) -> None:
    from images.rootfs import default_cache_dir

    table = read_table(built_image)
    disk_id = str(table["id"]).removeprefix("0x")
    conf = debugfs_cat(partitions["root"], "/etc/rauc/system.conf").decode()
    manifest = json.loads((built_image.parent / "manifest.json").read_text())
    assert f"compatible={manifest['update']['compatible']}" in conf
    assert "bootloader=uboot" in conf
    assert f"device=/dev/disk/by-partuuid/{disk_id}-02" in conf
    assert f"device=/dev/disk/by-partuuid/{disk_id}-03" in conf
    keyring = debugfs_cat(partitions["root"], "/etc/rauc/keyring.pem")
    assert keyring == (default_cache_dir() / "update-keys" / "ca.cert.pem").read_bytes()
    assert b"PRIVATE KEY" not in keyring
    assert sorted(names_in(partitions["root"], "/etc/rauc")) == sorted(
        [".", "..", "system.conf", "keyring.pem"]
    )
    watchdog = debugfs_cat(partitions["root"], "/etc/systemd/system.conf.d/moltbot-watchdog.conf")
    assert b"\nRuntimeWatchdogSec=30s" in watchdog
    assert b"kernel.panic = 10" in debugfs_cat(
        partitions["root"], "/etc/sysctl.d/moltbot-panic.conf"
    )
    fw_env = debugfs_cat(partitions["root"], "/etc/fw_env.config").decode()
    assert "/boot/firmware/rauc-state.env" in fw_env


def test_update_bundle_is_signed_and_holds_exactly_the_images_root_file_system(
    built_image: Path, partitions: dict[str, Path]
) -> None:
    from edge.files import sha256_file
    from images.rootfs import default_cache_dir
    from images.update_bundle import inspect_bundle

    manifest = json.loads((built_image.parent / "manifest.json").read_text())
    bundle = built_image.parent / manifest["update"]["bundle"]
    info = inspect_bundle(
        bundle,
        keyring=default_cache_dir() / "update-keys" / "ca.cert.pem",
        compatible=manifest["update"]["compatible"],
    )
    assert info.version == manifest["update"]["version"]
    assert info.format == "verity"
    (rootfs,) = info.images
    assert rootfs.sha256 == sha256_file(partitions["root"])
    assert bundle.name in (built_image.parent / "SHA256SUMS").read_text()


def test_application_stage_is_identical_from_two_build_directories(
    built_image: Path, tmp_path: Path
) -> None:
    """The venv (scripts, RECORDs, .pyc, metadata) built twice, at different depths and in
    different folders, once with its dependency layer built fresh and once from the cache,
    compared file by file: the first difference is named."""
    from images.app import install_application
    from images.build import tree_digest
    from images.rootfs import default_cache_dir

    fresh_cache = tmp_path / "fresh-cache" / "wheels"
    shutil.copytree(default_cache_dir() / "wheels", fresh_cache)
    roots = [tmp_path / "one" / "root", tmp_path / "two" / "deeper" / "root"]
    for root, wheelhouse in zip(roots, (fresh_cache, default_cache_dir() / "wheels"), strict=True):
        root.mkdir(parents=True)
        install_application(root, wheelhouse)
    assert len(list((fresh_cache.parent / "app-deps").iterdir())) == 1
    first, second = ({p.relative_to(r): p for p in sorted(r.rglob("*"))} for r in roots)
    assert first.keys() == second.keys(), sorted(set(first) ^ set(second))[:5]
    for relative, path in first.items():
        other = second[relative]
        if path.is_symlink() or other.is_symlink():
            assert os.readlink(path) == os.readlink(other), relative
        elif path.is_file():
            assert path.read_bytes() == other.read_bytes(), f"first difference: {relative}"
    assert tree_digest(roots[0]) == tree_digest(roots[1])


def test_a_second_build_from_the_cached_rootfs_is_byte_identical(
    built_image: Path, tmp_path: Path
) -> None:
    """Same commit, same recipe, same cached rootfs, staged in another folder: same sha256."""
    if os.environ.get("MOLTBOT_TEST_IMAGE_DIR"):
        pytest.skip("compares with the image this session built (MOLTBOT_TEST_IMAGE_DIR is set)")
    from edge.files import sha256_file
    from images.build import build_image
    from images.reproducible import first_byte_difference
    from images.rootfs import default_cache_dir

    again = build_image(
        RECIPE, tmp_path / "out", default_cache_dir(), compress=False, work_dir=tmp_path / "w"
    )
    assert again.rootfs_cached
    first = json.loads((built_image.parent / "build-report.json").read_text())
    assert again.tree_sha256 == first["tree_sha256"]
    assert sha256_file(again.image) == sha256_file(built_image), first_byte_difference(
        built_image, again.image
    )


def boot_file(partition: Path, name: str, target: Path) -> Path:
    subprocess.run(["mcopy", "-o", "-i", str(partition), f"::{name}", str(target)], check=True)
    return target


@pytest.fixture(scope="session")
def initrd(partitions: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The initrd U-Boot boots: slot A's /boot/initrd.img (a link to the versioned file)."""
    target = tmp_path_factory.mktemp("initrd") / "i"
    name = link_target(partitions["root"], "/boot/initrd.img")
    return dump(partitions["root"], f"/boot/{name}", target)


def test_initramfs_is_zstd_and_holds_fsck_for_the_ext4_root(initrd: Path) -> None:
    assert initramfs_compression(initrd) == "zstd"
    names = {entry.rsplit("/", 1)[-1] for entry in read_initramfs_listing(initrd)}
    assert {"fsck", "fsck.ext4", "e2fsck", "logsave"} <= names, sorted(names)


@pytest.mark.parametrize(
    "dtb", ["bcm2711-rpi-4-b.dtb", "bcm2711-rpi-400.dtb", "bcm2711-rpi-cm4-io.dtb"]
)
def test_every_driver_on_the_sd_cards_device_tree_path_is_in_the_initramfs_or_built_in(
    partitions: dict[str, Path], initrd: Path, tmp_path: Path, dtb: str
) -> None:
    """The shipped DTB, the shipped kernel's module index, the shipped initramfs: the same
    check the build runs, repeated on the finished image."""
    listing = read_initramfs_listing(initrd)
    in_initramfs = initramfs_modules(listing)
    assert {"fixed", "gpio_regulator", "sdhci_iproc"} <= in_initramfs
    version = next(
        e.split("/")[-2] for e in listing if e.endswith("/modules.dep") and "/modules/" in e
    )
    modules = tmp_path / version
    modules.mkdir()
    for name in ("modules.alias", "modules.builtin", "modules.builtin.modinfo"):
        (modules / name).write_bytes(
            debugfs_cat(partitions["root"], f"/usr/lib/modules/{version}/{name}")
        )
    tree = DeviceTree.read(boot_file(partitions["boot"], dtb, tmp_path / dtb))
    statuses = check_boot_path(
        tree, "/emmc2bus/mmc@7e340000", KernelModules.read(modules), in_initramfs
    )
    where = {s.path: s.where for s in statuses}
    assert where["/sd_vcc_reg"] == where["/sd_io_1v8_reg"] == "initramfs"
    assert where["/emmc2bus/mmc@7e340000"] == "initramfs"


def test_build_report_lists_the_boot_path_it_checked(built_image: Path) -> None:
    report = json.loads((built_image.parent / "build-report.json").read_text())
    checked = {entry["device_tree"]: entry for entry in report["boot_path"]}
    assert set(checked) == {"bcm2711-rpi-4-b.dtb", "bcm2711-rpi-400.dtb", "bcm2711-rpi-cm4-io.dtb"}
    pi4 = checked["bcm2711-rpi-4-b.dtb"]
    assert pi4["compression"] == "zstd"
    assert any(line.startswith("initramfs") and "/sd_vcc_reg" in line for line in pi4["drivers"])


def test_root_file_system_is_slimmed_but_keeps_licences_and_the_boot_drivers(
    built_image: Path, partitions: dict[str, Path]
) -> None:
    report = json.loads((built_image.parent / "build-report.json").read_text())
    sizes = report["sizes_bytes"]
    assert sizes["slimmed_docs"] > 5 * 2**20
    assert sizes["slimmed_locales"] > 5 * 2**20
    assert sizes["slimmed_kernel_modules"] > 20 * 2**20
    largest = report["largest_directories_bytes"]["root"]
    assert "usr/lib/modules" in largest and "opt/moltbot/venv" in largest
    root = partitions["root"]
    assert set(names_in(root, "/usr/share/doc/systemd")) <= {".", "..", "copyright"}
    assert "copyright" in names_in(root, "/usr/share/doc/systemd")
    assert set(names_in(root, "/usr/share/locale")) <= {".", "..", "locale.alias"}
    excludes = debugfs_cat(root, "/etc/dpkg/dpkg.cfg.d/moltbot-slim-docs").decode()
    assert "path-include=/usr/share/doc/*/copyright" in excludes
    version = next(name for name in names_in(root, "/usr/lib/modules") if name not in (".", ".."))
    modules_dep = debugfs_cat(root, f"/usr/lib/modules/{version}/modules.dep").decode()
    assert "amdgpu.ko" not in modules_dep and "mlx5_core.ko" not in modules_dep
    assert "brcmfmac.ko" in modules_dep and "genet/genet.ko" in modules_dep
    assert "sdhci-iproc.ko" in modules_dep


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


def test_image_carries_the_camera_gpio_and_sparkplug_parts(
    built_image: Path, partitions: dict[str, Path]
) -> None:
    manifest = json.loads((built_image.parent / "manifest.json").read_text())
    wheels = {w["name"].lower() for w in manifest["wheels"]}
    assert {"opencv-python-headless", "gpiod", "protobuf"} <= wheels, sorted(wheels)
    group = debugfs_cat(partitions["root"], "/etc/group").decode()
    video = next(line for line in group.splitlines() if line.startswith("video:"))
    assert "moltbot" in video.split(":")[3]
    rule = debugfs_cat(partitions["root"], "/usr/lib/udev/rules.d/60-moltbot-gpio.rules")
    assert b'KERNEL=="gpiochip*", GROUP="moltbot"' in rule


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


@pytest.fixture
def booted(built_image: Path, tmp_path: Path, mosquitto: MosquittoBroker) -> tuple[QemuBoot, float]:
    site = {
        "device": {"id": "boot-test-01", "name": "QEMU boot test"},
        "uplink": {"host": HOST_FROM_GUEST, "port": mosquitto.port, "protocol": "5"},
        "api": {"token": API_TOKEN},
        "system": {"hostname": "line3-press"},
    }
    boot = QemuBoot(configured_copy(built_image, tmp_path, site), tmp_path, api_port=free_port())
    boot.start()
    yield boot, boot.started_at  # type: ignore[misc]
    boot.stop()
    keep_console(boot, "last-boot-console.log")


def selftest_verdict(boot: QemuBoot, timeout_s: float) -> str:
    verdict = boot.wait_for(r"MOLTBOT-SELFTEST: (PASS|FAIL)\b", timeout_s=timeout_s)
    console = boot.console()
    assert verdict is not None, f"no self-test verdict; console ends:\n{console[-4000:]}"
    assert verdict.group(1) == "PASS", "\n".join(
        line for line in console.splitlines() if "MOLTBOT-SELFTEST" in line
    )
    return console


def check_a_defective_part_is_an_event(api: GuestApi, collector: Collector) -> None:
    result = api.post("/v1/infer?trigger=true&part_id=SN-0001", defect_png(), "image/png")
    assert result["label"] == "scratch", result
    assert collector.wait_for(
        lambda got: any("/boot-test-01/defect" in m.topic for m in got), 60
    ), f"no defect event reached the broker: {[m.topic for m in collector.messages]}"
    event = next(m for m in collector.messages if m.topic.endswith("/defect")).json()
    # Uploads are parts: the first defective part is an event, carrying its id.
    assert (event["data"]["class"], event["data"]["part_id"]) == ("scratch", "SN-0001"), event


def check_a_spoken_command_is_heard(api: GuestApi, collector: Collector, tmp_path: Path) -> None:
    """Voice in every image: no microphone in QEMU is reported, not fatal; a spoken command
    (espeak-ng on the host) is recognised on aarch64 by the image's slimmed Vosk model."""
    ready = api.get("/readyz")
    assert ready["checks"]["microphone"].startswith("missing"), ready
    wav = speak("검사 시작", tmp_path / "start.wav").read_bytes()
    answer = api.post("/v1/asr", wav, "audio/wav", timeout_s=300)
    [utterance] = answer["utterances"]
    assert (utterance["text"], utterance["intent"]) == ("검사 시작", "start"), utterance
    assert utterance["action"] == "start_inspection", utterance
    assert utterance["result"]["ok"] is True, utterance
    assert collector.wait_for(
        lambda got: any(m.topic.endswith("/boot-test-01/voice") for m in got), 60
    ), f"no voice event reached the broker: {[m.topic for m in collector.messages]}"
    voice = next(m for m in collector.messages if m.topic.endswith("/voice")).json()
    assert (voice["data"]["intent"], voice["data"]["text"]) == ("start", "검사 시작"), voice


def check_a_power_cut_is_survived(boot: QemuBoot, tmp_path: Path) -> None:
    """Power cut while the appliance runs: the next boot's initramfs replays the journal and
    checks the root before mounting it, and the appliance comes back by itself."""
    boot.power_cut()
    again = QemuBoot(boot.image, tmp_path, api_port=boot.api_port, log_name="after-cut.log")
    again.start()
    try:
        console = selftest_verdict(again, timeout_s=900)
        check = console[console.index("Will now check root file system") :][:2000]
        assert "fsck from util-linux" in check, check
        assert "recovering journal" in check, check
        assert "MOLTBOT-SELFTEST: ok reference inference" in console
        # the first boot's health gate marked slot A good through RAUC and fw_setenv: U-Boot
        # read the refilled counter from the FAT state file
        assert "moltbot-boot: BOOT_ORDER=[A B] BOOT_A_LEFT=3 BOOT_B_LEFT=3" in console
    finally:
        again.stop()
        keep_console(again, "last-boot-after-power-cut.log")


def test_image_boots_serves_health_passes_its_selftest_and_publishes_to_the_host_broker(
    booted: tuple[QemuBoot, float], mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    boot, started = booted
    collector = Collector("127.0.0.1", mosquitto.port, "moltbot/#", client_id="boot-test")
    try:
        console = selftest_verdict(boot, timeout_s=1500)
        assert "MOLTBOT-SELFTEST: ok reference inference" in console
        assert "MOLTBOT-SELFTEST: ok system: running" in console  # booted, no failed unit
        assert "line3-press login:" in console, "the site file's host name was not applied"
        assert "fsck not present" not in console
        assert "moltbot-boot: booting slot A: root=PARTUUID=" in console  # U-Boot's boot.scr
        assert "rauc.slot=A" in console
        # systemd arms the hardware watchdog (QEMU's i6300esb here, bcm2835_wdt on a Pi)
        assert re.search(r"ok watchdog: i6300ESB timer active, timeout 30 s", console), console
        assert boot.wait_for(r"marked slot rootfs\.0 as good", 300), "confirm-boot never ran"
        assert "Will now check root file system" in console  # the initramfs checks the root
        data_mib = re.search(r"ok storage: /var/lib/moltbot (\d+) MiB", console)
        assert data_mib and int(data_mib.group(1)) > 1400, "first boot did not grow the data fs"

        api = GuestApi(boot.api_port, API_TOKEN)
        assert api.get("/healthz")["status"] == "ok"
        healthy_after_s = time.monotonic() - started
        assert collector.wait_for(
            lambda got: any(m.topic.endswith("/status") and b"online" in m.payload for m in got),
            60,
        ), "the appliance never announced itself online to the host broker"
        check_a_defective_part_is_an_event(api, collector)
        check_a_spoken_command_is_heard(api, collector, tmp_path)
        print(f"boot to /healthz under TCG: {healthy_after_s:.0f} s")  # noqa: T201
    finally:
        collector.close()
    check_a_power_cut_is_survived(boot, tmp_path)


def test_image_boots_from_the_emulated_pi4s_sd_card_with_its_own_device_tree(
    built_image: Path, tmp_path: Path
) -> None:
    """QEMU 10's raspi4b: the image's kernel, initrd and bcm2711-rpi-4-b.dtb (a test copy with
    images.qemu.RASPI4B_DTB_EDITS: hardware QEMU lacks), the image as the SD card. The root is
    found through emmc2 (sdhci-iproc) and the regulator driver from the initramfs, as on a Pi."""
    # Voice is off here: QEMU's emmc2 moves data by PIO, and reading the 180 MB Vosk model
    # through it under TCG takes minutes; the virt boot test covers voice on the same image.
    site = {
        "device": {"id": "pi4-sd-test"},
        "api": {"token": API_TOKEN},
        "voice": {"enabled": False},
    }
    image = configured_copy(built_image, tmp_path, site)
    boot = QemuBoot(image, tmp_path, api_port=0, machine="raspi4b", log_name="raspi4b.log")
    boot.start()
    try:
        console = selftest_verdict(boot, timeout_s=1500)
        assert re.search(r"mmc\d+: new .*SD.* card", console), "no SD card on emmc2"
        assert re.search(r"EXT4-fs \(mmcblk\d+p2\): mounted filesystem", console), "root not on SD"
        assert "Will now check root file system" in console
        assert "MOLTBOT-SELFTEST: ok reference inference" in console
    finally:
        boot.stop()
        keep_console(boot, "last-boot-raspi4b.log")
