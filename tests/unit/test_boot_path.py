"""The device-tree-driven initramfs check, on a hand-made DTB compiled by the real ``dtc``.

The DTB copies the shape of the Pi 4's SD path (tests/unit/data/sd_boot.dts); the kernel's
module index is written per test, so each case says exactly which driver is where.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from images.boot_path import (
    KernelModules,
    MissingBootModuleError,
    boot_dependencies,
    check_boot_path,
    initramfs_compression,
    initramfs_modules,
    modalias,
    read_initramfs_listing,
)
from images.devicetree import DeviceTree, DeviceTreeError

DTS = Path(__file__).parent / "data" / "sd_boot.dts"
SD = "/emmc2bus/mmc@7e340000"
ALIASES = """\
alias of:N*T*Cbrcm,bcm2711-emmc2C* sdhci_iproc
alias of:N*T*Cbrcm,bcm2711-emmc2 sdhci_iproc
alias of:N*T*Cregulator-fixedC* fixed
alias of:N*T*Cregulator-fixed fixed
alias of:N*T*Cregulator-gpioC* gpio_regulator
alias of:N*T*Cregulator-gpio gpio_regulator
alias of:N*T*Craspberrypi,firmware-gpioC* gpio_raspberrypi_exp
alias of:N*T*Craspberrypi,firmware-gpio gpio_raspberrypi_exp
alias of:N*T*Cbrcm,bcm2711-genet-v5 genet
"""
BUILTIN_MODINFO = [
    "raspberrypi.alias=of:N*T*Craspberrypi,bcm2835-firmwareC*",
    "bcm2835_mailbox.alias=of:N*T*Cbrcm,bcm2835-mbox",
    "clk_bcm2835.alias=of:N*T*Cbrcm,bcm2711-cprman",
    "pinctrl_bcm2835.alias=of:N*T*Cbrcm,bcm2711-gpio",
    "raspberrypi.license=GPL",
]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> DeviceTree:
    if shutil.which("dtc") is None:
        pytest.fail("dtc is missing: apt-get install device-tree-compiler (make test does)")
    dtb = tmp_path_factory.mktemp("dtb") / "sd_boot.dtb"
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", str(dtb), str(DTS)], check=True)
    return DeviceTree.read(dtb)


@pytest.fixture
def kernel(tmp_path: Path) -> KernelModules:
    modules = tmp_path / "6.1.0-test-arm64"
    modules.mkdir()
    (modules / "modules.alias").write_text(ALIASES)
    (modules / "modules.builtin.modinfo").write_bytes("\0".join(BUILTIN_MODINFO).encode() + b"\0")
    (modules / "modules.builtin").write_text(
        "kernel/drivers/firmware/raspberrypi.ko\nkernel/drivers/clk/bcm/clk-bcm2835.ko\n"
    )
    return KernelModules.read(modules)


def test_walk_reaches_supplies_their_gpio_expander_its_firmware_and_mailbox(
    tree: DeviceTree,
) -> None:
    reasons = {dep.node.path: dep.reason for dep in boot_dependencies(tree, SD)}
    assert reasons[SD] == "boot device"
    assert reasons["/sd-vcc-reg"] == f"vmmc-supply of {SD}"
    assert reasons["/sd-io-1v8-reg"] == f"vqmmc-supply of {SD}"
    assert reasons["/firmware/gpio"].endswith("-reg")  # gpio / gpios of a regulator
    assert reasons["/firmware"] == "bus of /firmware/gpio"
    assert reasons["/mailbox@7e00b880"] == "mboxes of /firmware"
    assert reasons["/cprman@7e101000"] == f"clocks of {SD}"
    assert reasons["/gpio@7e200000"] == f"pinctrl-0 of {SD}"  # the pin group's controller
    assert reasons["/emmc2bus"] == f"bus of {SD}"
    assert reasons["/interrupt-controller@40041000"] == f"interrupts of {SD}"
    assert "/ethernet@7d580000" not in reasons  # nothing on the SD path refers to it
    assert "/" not in reasons


def test_alias_names_the_node_by_its_alias(tree: DeviceTree) -> None:
    assert boot_dependencies(tree, "mmc0")[0].node.path == SD


def test_modalias_matches_the_kernels_format(tree: DeviceTree) -> None:
    assert modalias(tree.node(SD)) == "of:NmmcT<NULL>Cbrcm,bcm2711-emmc2"
    assert modalias(tree.node("/firmware")) == (
        "of:NfirmwareT<NULL>Craspberrypi,bcm2835-firmwareCsimple-mfd"
    )


def test_a_supply_driver_missing_from_the_initramfs_fails_naming_node_compatible_module(
    tree: DeviceTree, kernel: KernelModules
) -> None:
    initramfs = frozenset({"sdhci_iproc", "gpio_regulator", "gpio_raspberrypi_exp"})
    with pytest.raises(MissingBootModuleError) as caught:
        check_boot_path(tree, SD, kernel, initramfs)
    message = str(caught.value)
    assert "/sd-vcc-reg" in message
    assert "'regulator-fixed'" in message
    assert "needs module fixed" in message
    assert f"vmmc-supply of {SD}" in message
    assert "INITRAMFS_MODULES" in message  # what to do
    assert "gpio_regulator" not in message  # only what is missing is named


def test_every_driver_present_passes_and_says_where_each_one_is(
    tree: DeviceTree, kernel: KernelModules
) -> None:
    initramfs = frozenset({"sdhci_iproc", "fixed", "gpio_regulator", "gpio_raspberrypi_exp"})
    where = {s.path: s.where for s in check_boot_path(tree, SD, kernel, initramfs)}
    assert where[SD] == "initramfs"
    assert where["/sd-vcc-reg"] == "initramfs"
    assert where["/firmware"] == "built-in"  # from modules.builtin.modinfo
    assert where["/mailbox@7e00b880"] == "built-in"
    assert where["/emmc2bus"] == "core"  # simple-bus: populated by the OF core
    assert where["/interrupt-controller@40041000"] == "not a module"  # irqchips: no alias


def test_a_boot_device_module_missing_fails_too(tree: DeviceTree, kernel: KernelModules) -> None:
    with pytest.raises(MissingBootModuleError, match="needs module sdhci_iproc"):
        check_boot_path(tree, SD, kernel, frozenset({"fixed", "gpio_regulator"}))


def test_an_unknown_boot_node_is_refused_with_a_hint(tree: DeviceTree) -> None:
    with pytest.raises(DeviceTreeError, match="no node /emmc2bus/mmc@0"):
        boot_dependencies(tree, "/emmc2bus/mmc@0")


def test_a_file_that_is_not_a_dtb_is_refused(tmp_path: Path) -> None:
    dts = tmp_path / "board.dts"
    dts.write_text(DTS.read_text())
    with pytest.raises(DeviceTreeError, match="bad magic") as caught:
        DeviceTree.read(dts)
    assert caught.value.where == str(dts)


def test_a_truncated_dtb_is_refused(tree: DeviceTree, tmp_path: Path) -> None:
    dtb = tmp_path / "cut.dtb"
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", str(dtb), str(DTS)], check=True)
    dtb.write_bytes(dtb.read_bytes()[:200])
    with pytest.raises(DeviceTreeError, match="cut short"):
        DeviceTree.read(dtb)


@pytest.mark.parametrize("compressor", ["zstd", "gzip", "xz"])
def test_initramfs_listing_reads_a_real_compressed_cpio(tmp_path: Path, compressor: str) -> None:
    if shutil.which("cpio") is None:
        pytest.fail("cpio is missing: apt-get install cpio (make test does)")
    tree = tmp_path / "tree"
    driver = tree / "usr/lib/modules/6.1.0-test-arm64/kernel/drivers/regulator"
    driver.mkdir(parents=True)
    (driver / "fixed.ko").write_bytes(b"\0" * 100)
    (driver / "gpio-regulator.ko.xz").write_bytes(b"\0" * 33)
    (tree / "usr/sbin").mkdir(parents=True)
    (tree / "usr/sbin/fsck").write_bytes(b"#!/bin/sh\n")
    names = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    archive = subprocess.run(
        ["cpio", "-o", "-H", "newc", "--quiet"],
        input="\n".join(names).encode(),
        cwd=tree,
        capture_output=True,
        check=True,
    ).stdout
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(
        subprocess.run([compressor, "-c"], input=archive, capture_output=True, check=True).stdout
    )
    assert initramfs_compression(initrd) == compressor
    listing = read_initramfs_listing(initrd)
    assert sorted(listing) == names
    assert initramfs_modules(listing) == {"fixed", "gpio_regulator"}
