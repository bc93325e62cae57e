"""The files an image's operating system needs around the application: mounts, networking, SSH
(keys only), the appliance's system config, the Pi's boot files, enabled units.

Written straight into the unpacked tree on the host; ``systemctl --root`` enables units without
running anything under emulation.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from images.disk import DiskLayout
from images.paths import REPO_ROOT
from images.rootfs import APP_UID
from images.run import run

# The runtime's unit files, read as data from the checkout.
UNITS_DIR = REPO_ROOT / "edge" / "units"
DATA_MOUNT = Path("var/lib/moltbot")
BOOT_MOUNT = Path("boot/firmware")
VOSK_DIR = "vosk-model"
ENABLED_UNITS = (
    "moltbot.service",
    "moltbot-setup.service",
    "moltbot-selftest.service",
    "moltbot-confirm-boot.service",
    "moltbot-reboot.path",
    "systemd-networkd.service",
    "systemd-resolved.service",
    "systemd-timesyncd.service",
    "ssh.service",
)


@dataclass(frozen=True)
class SystemSettings:
    board: str
    hostname: str
    services: dict[str, bool]
    has_vosk_model: bool
    boot_medium: str


def write_text(root: Path, relative: str, text: str, mode: int = 0o644) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def appliance_config(settings: SystemSettings) -> dict[str, Any]:
    """/etc/moltbot/config.yaml: the image's defaults; the site file on the boot partition and
    MOLTBOT_* variables override it."""
    services = settings.services
    config: dict[str, Any] = {
        "device": {"board": settings.board, "data_dir": f"/{DATA_MOUNT}"},
        "inference": {"enabled": services.get("inference", True)},
        "triggers": {
            "enabled": services.get("triggers", True),
            "watch_dir": f"/{DATA_MOUNT}/incoming",
        },
        "uplink": {"enabled": services.get("uplink", True)},
        "api": {"enabled": services.get("api", True)},
        "voice": {"enabled": services.get("voice", False) and settings.has_vosk_model},
    }
    if settings.has_vosk_model:
        config["voice"]["model_dir"] = f"/{DATA_MOUNT}/{VOSK_DIR}"
    return config


def fstab(layout: DiskLayout | None) -> str:
    if layout is None:
        # Jetson: NVIDIA's flash tools write the rootfs to the APP partition and boot it as
        # /dev/root; the data dir lives on it (NVIDIA's default layout has no spare partition).
        return (
            "# <device>  <mount point>  <type>  <options>  <dump>  <pass>\n"
            "/dev/root  /  ext4  defaults,noatime  0  1\n"
        )
    lines = [
        "# <device>  <mount point>  <type>  <options>  <dump>  <pass>",
        # The root is whichever slot (A or B) U-Boot booted: the kernel's root= names it.
        "/dev/root  /  ext4  defaults,noatime,commit=30  0  1",
    ]
    if any(p.name == "boot" for p in layout.partitions):
        # Site secrets live here: readable by root and the appliance's group only.
        lines.append(
            f"PARTUUID={layout.partuuid('boot')}  /{BOOT_MOUNT}  vfat  "
            f"defaults,noatime,umask=0027,gid={APP_UID}  0  2"
        )
    lines.append(
        f"PARTUUID={layout.partuuid('data')}  /{DATA_MOUNT}  ext4  defaults,noatime,nofail  0  2"
    )
    return "\n".join(lines) + "\n"


def install_system_files(root: Path, layout: DiskLayout | None, settings: SystemSettings) -> None:
    write_text(root, "etc/hostname", f"{settings.hostname}\n")
    write_text(
        root,
        "etc/hosts",
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{settings.hostname}\n::1\tlocalhost ip6-localhost\n",
    )
    write_text(root, "etc/fstab", fstab(layout))
    (root / DATA_MOUNT).mkdir(parents=True, exist_ok=True)
    (root / BOOT_MOUNT).mkdir(parents=True, exist_ok=True)
    write_text(
        root,
        "etc/moltbot/config.yaml",
        "# The image's settings. Per-site values go into the boot partition's moltbot/site.yaml\n"
        "# (moltbot image configure); fleet values into MOLTBOT_* variables.\n"
        + yaml.safe_dump(appliance_config(settings), sort_keys=True),
    )
    write_text(
        root,
        "etc/systemd/network/20-wired.network",
        "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n\n[DHCPv4]\nUseDomains=yes\n",
    )
    write_text(
        root,
        "etc/systemd/network/25-wireless.network",
        "[Match]\nName=wl*\n\n[Network]\nDHCP=yes\n",
    )
    # Store-and-forward must not wait two minutes for a network that may not be there, and a
    # device booted without a cable is not broken: "-" makes a timeout no failed unit (found by
    # the raspi4b boot test, which has no network: the system was "degraded").
    write_text(
        root,
        "etc/systemd/system/systemd-networkd-wait-online.service.d/moltbot.conf",
        "[Service]\nExecStart=\nExecStart=-/lib/systemd/systemd-networkd-wait-online --any "
        "--timeout=20\n",
    )
    write_text(
        root,
        "etc/ssh/sshd_config.d/moltbot.conf",
        "# Keys only: no image has a password anywhere.\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin no\nPermitEmptyPasswords no\n",
    )
    write_text(
        root,
        "etc/sudoers.d/moltbot-admins",
        "# Admins log in with SSH keys and have no password to type.\n"
        "%sudo ALL=(ALL) NOPASSWD: ALL\n",
        mode=0o440,
    )
    # A hang or a panic reboots (the hardware watchdog, kernel.panic): U-Boot's counters decide.
    for folder, name in (
        ("etc/systemd/system.conf.d", "moltbot-watchdog.conf"),
        ("etc/sysctl.d", "moltbot-panic.conf"),
    ):
        (root / folder).mkdir(parents=True, exist_ok=True)
        shutil.copy2(UNITS_DIR / "system" / name, root / folder / name)
    units = root / "usr/lib/systemd/system"
    units.mkdir(parents=True, exist_ok=True)
    for unit in sorted([*UNITS_DIR.glob("*.service"), *UNITS_DIR.glob("*.path")]):
        shutil.copy2(unit, units / unit.name)
    rules = root / "usr/lib/udev/rules.d"
    rules.mkdir(parents=True, exist_ok=True)
    for rule in sorted(UNITS_DIR.glob("*.rules")):
        shutil.copy2(rule, rules / rule.name)
    if settings.boot_medium == "emmc":
        drop_in = root / "etc/systemd/system/moltbot.service.d"
        drop_in.mkdir(parents=True, exist_ok=True)
        shutil.copy2(UNITS_DIR / "jetson" / "tegra-gpu.conf", drop_in / "tegra-gpu.conf")
    enabled = [u for u in ENABLED_UNITS if (units / u).exists() or _shipped(root, u)]
    run(["systemctl", "--root", root, "enable", *enabled], step="enable the units")
    run(
        ["systemctl", "--root", root, "disable", "wpa_supplicant.service"],
        step="leave Wi-Fi to first boot",
    )


def _shipped(root: Path, unit: str) -> bool:
    return any(
        (root / folder / unit).exists()
        for folder in ("lib/systemd/system", "usr/lib/systemd/system")
    )


def boot_files(root: Path) -> Path:
    """The FAT partition's content as Debian's raspi-firmware left it in the tree: the Pi
    firmware and device trees (images/ab_slots.py adds U-Boot, boot.scr and config.txt)."""
    boot = root / BOOT_MOUNT
    if not (boot / "start4.elf").exists():
        from images.run import ToolError  # noqa: PLC0415

        raise ToolError(
            "the root file system has no Pi firmware in /boot/firmware",
            where=str(boot),
            hint="the recipe's board must boot from sd (raspi-firmware, linux-image-arm64)",
        )
    return boot
