"""A/B root slots on the Pi's SD card: what U-Boot and RAUC need in the image.

The Pi firmware starts U-Boot (``kernel=u-boot.bin``); U-Boot runs ``boot.scr`` from the FAT
partition, which picks slot A (p2) or B (p3) by RAUC's boot counters kept in a small state
file beside it, and boots the kernel and initrd from that slot's own ``/boot``: kernel and
userland are updated together. RAUC on the device reads and writes the same counters through
``/etc/fw_env.config`` and installs signed bundles into the slot that is not running.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from images import uboot_script
from images.disk import DiskLayout
from images.paths import REPO_ROOT
from images.run import ToolError
from images.system_files import BOOT_MOUNT, DATA_MOUNT, write_text
from images.templates import render

logger = logging.getLogger(__name__)

U_BOOT_BIN = Path("usr/lib/u-boot/rpi_arm64/u-boot.bin")
SYSTEM_CONF_TEMPLATE = REPO_ROOT / "images" / "rauc" / "system.conf.in"
KEYRING = Path("etc/rauc/keyring.pem")
RELEASE_FILE = Path("etc/moltbot/release")
RAUC_DATA_DIR = DATA_MOUNT / "rauc"
# Stable names U-Boot loads from the slot; Debian keeps them pointing at the newest kernel
# (/etc/kernel-img.conf: link_in_boot), so a kernel installed on the device boots too.
SLOT_KERNEL = Path("boot/vmlinuz")
SLOT_INITRD = Path("boot/initrd.img")
# The initramfs checks the root before mounting it (FSTYPE=ext4 in its config) and repairs
# what e2fsck repairs unattended: a device on a line has nobody at a console.
KERNEL_ARGS = "rootwait rootfstype=ext4 fsck.repair=yes"


@dataclass(frozen=True)
class SlotSettings:
    compatible: str  # RAUC's compatible: bundles for other boards or recipes are refused
    keyring: Path  # the CA certificate on the build host (never a private key)
    release: str  # this root file system's version (the bundle's), in /etc/moltbot/release


def install_slot_files(root: Path, layout: DiskLayout, settings: SlotSettings) -> None:
    """Into the root tree (what every slot carries): the stable kernel/initrd names, RAUC's
    system.conf and keyring, fw_env.config, and the Pi firmware hook's settings."""
    write_text(root, str(RELEASE_FILE), f"{settings.release}\n")
    _link_newest(root, "vmlinuz")
    _link_newest(root, "initrd.img")
    write_text(root, "etc/kernel-img.conf", "do_symlinks = yes\nlink_in_boot = yes\n")
    # Debian's raspi-firmware rewrites config.txt when a kernel is installed on the device:
    # keep it starting U-Boot (the slots carry the kernels), with the image's other settings.
    write_text(root, "etc/default/raspi-firmware", "KERNEL=u-boot.bin\nINITRAMFS=no\n")
    write_text(root, "etc/default/raspi-firmware-custom", "dtparam=audio=on\ndisable_overscan=1\n")
    write_text(
        root,
        "etc/rauc/system.conf",
        render(
            SYSTEM_CONF_TEMPLATE,
            {
                "COMPATIBLE": settings.compatible,
                "DATA_DIR": f"/{RAUC_DATA_DIR}",
                "SLOT_A_PARTUUID": layout.partuuid("root"),
                "SLOT_B_PARTUUID": layout.partuuid("root_b"),
            },
        ),
    )
    install_keyring(root, settings.keyring)
    write_text(root, "etc/fw_env.config", uboot_script.fw_env_config(mount=Path("/") / BOOT_MOUNT))


def install_keyring(root: Path, keyring: Path) -> None:
    """RAUC's keyring under ``root``: the update CA certificate, never a private key (a Pi
    image's slots and a Jetson bundle's overlay alike)."""
    if not keyring.is_file():
        raise ToolError(
            f"the update keyring {keyring} is missing",
            where=str(keyring),
            hint="moltbot image keys init DIR makes a development CA; pass --update-keys DIR",
        )
    certificate = keyring.read_bytes()
    if b"PRIVATE KEY" in certificate:
        raise ToolError(
            f"the update keyring {keyring} holds a private key",
            where=str(keyring),
            hint="the keyring is the CA certificate (ca.cert.pem) only; keys stay on the builder",
        )
    target = root / KEYRING
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(certificate)
    target.chmod(0o644)


def _link_newest(root: Path, name: str) -> None:
    found = sorted((root / "boot").glob(f"{name}-*"))
    if not found:
        raise ToolError(
            f"the root file system has no /boot/{name}-*",
            where=str(root / "boot"),
            hint="the board's packages must include linux-image-arm64 and initramfs-tools",
        )
    link = root / "boot" / name
    link.unlink(missing_ok=True)
    link.symlink_to(found[-1].name)


def install_boot_partition_files(root: Path, boot: Path) -> None:
    """The FAT partition: the Pi firmware (already there), U-Boot, boot.scr, the boot-counter
    state file and config.txt. The kernels live in the slots, not here."""
    for stale in (*boot.glob("vmlinuz-*"), *boot.glob("initrd.img-*"), boot / "cmdline.txt"):
        stale.unlink(missing_ok=True)
    u_boot = root / U_BOOT_BIN
    if not u_boot.is_file():
        raise ToolError(
            f"the root file system has no {U_BOOT_BIN}",
            where=str(root),
            hint="the board's packages must include u-boot-rpi",
        )
    shutil.copyfile(u_boot, boot / "u-boot.bin")
    uboot_script.compile_script(
        boot / "boot.scr", uboot_script.render_boot_script(kernel_args=KERNEL_ARGS)
    )
    for name in uboot_script.STATE_FILES:
        (boot / name).write_bytes(uboot_script.initial_state())
    (boot / "config.txt").write_text(
        "# Moltbot Edge: Raspberry Pi 4B, 64-bit. The firmware starts U-Boot, whose boot.scr\n"
        "# picks root slot A or B (RAUC's boot counters) and boots that slot's Debian kernel.\n"
        "[all]\narm_64bit=1\nenable_uart=1\nupstream_kernel=1\nkernel=u-boot.bin\n"
        "dtparam=audio=on\ndisable_overscan=1\n"
    )
