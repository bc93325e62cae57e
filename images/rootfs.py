"""The root file system stage: ``mmdebstrap`` builds a Debian arm64 tree under qemu-user-static.

Its result is a tarball cached under a hash of everything that goes into it (suite, mirror or
snapshot, components, packages, users, hook text, builder format), so a second build with only
application changes skips this stage. The kernel's initramfs is built once, at the end, with a
targeted module list (SD/MMC, ext4, virtio for the QEMU boot test) instead of ``MODULES=most``,
which under emulation ran for twenty minutes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shlex
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from images.run import ToolError, require, run

logger = logging.getLogger(__name__)

# Bump when the hooks below change what lands in the tree.
ROOTFS_FORMAT = 4
# Every image: init, networking, time, SSH (keys only), Python for the application venv, tools
# that first boot uses to grow the data partition.
BASE_PACKAGES = (
    "systemd",
    "systemd-sysv",
    "systemd-timesyncd",
    "systemd-resolved",
    "udev",
    "dbus",
    "kmod",
    "iproute2",
    "iputils-ping",
    "ca-certificates",
    "openssh-server",
    "sudo",
    "python3",
    "fdisk",
    "e2fsprogs",
    "dosfstools",
    "libportaudio2",
    "libatomic1",  # vosk's libvosk.so links it
    "alsa-utils",
    "wpasupplicant",
)
# Per boot medium: what boots the board. A Pi boots Debian's kernel through the Pi firmware on a
# FAT partition; a Jetson's kernel and boot chain come from NVIDIA's BSP at flash time.
# zstd: initramfs-tools falls back to gzip, silently, when the compressor is not in the tree.
BOOT_PACKAGES: dict[str, tuple[str, ...]] = {
    "sd": (
        "linux-image-arm64",
        "raspi-firmware",
        "initramfs-tools",
        "zstd",
        "firmware-brcm80211",
        # A/B updates: U-Boot picks the root slot, RAUC installs bundles into the other one
        # and reads/writes U-Boot's boot counters with fw_printenv/fw_setenv.
        "u-boot-rpi",
        "rauc",
        "rauc-service",
        "libubootenv-tool",
    ),
    "emmc": (),
    "disk": ("linux-image-arm64", "initramfs-tools", "zstd"),
}
# What the root device needs before /lib/modules is reachable. The Pi 4's SD slot (emmc2) asks
# for two regulators whose drivers Debian builds as modules (the firmware GPIO expander that
# switches them is built in): without them the MMC core defers its probe forever and the boot
# stops at "Gave up waiting for root file system device". The build checks this list against
# the board's own DTB and the kernel's modules.alias (images/boot_path.py) and fails when a
# driver on the boot device's path is missing.
INITRAMFS_MODULES = (
    "mmc_block",
    "sdhci_iproc",
    "sdhci_pltfm",
    "fixed",  # regulator-fixed: emmc2's vmmc-supply
    "gpio-regulator",  # regulator-gpio: emmc2's vqmmc-supply (1.8/3.3 V signalling)
    "ext4",
    "virtio_blk",
    "virtio_pci",
    "virtio_mmio",
)
APP_USER = "moltbot"
APP_UID = 990


@dataclass(frozen=True)
class AdminUser:
    name: str
    ssh_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class RootfsSpec:
    """Everything that decides the rootfs tarball's content; its hash names the cache entry."""

    suite: str
    mirror: str
    components: tuple[str, ...]
    packages: tuple[str, ...]
    boot_medium: str
    root_partuuid: str
    admins: tuple[AdminUser, ...] = ()
    source_date_epoch: int | None = None
    format: int = field(default=ROOTFS_FORMAT)

    @property
    def all_packages(self) -> tuple[str, ...]:
        return tuple(sorted({*BASE_PACKAGES, *BOOT_PACKAGES[self.boot_medium], *self.packages}))

    def digest(self) -> str:
        canonical = json.dumps(
            asdict(self) | {"all_packages": self.all_packages, "hooks": self.hooks()},
            sort_keys=True,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    def _raspi_firmware_defaults(self) -> str:
        """What Debian's raspi-firmware hook reads while the tree is built (an A/B image
        replaces it afterwards: there U-Boot, not cmdline.txt, names the root)."""
        root = f"ROOTPART=PARTUUID={self.root_partuuid}\\n" if self.root_partuuid else ""
        return f'{root}CONSOLES="ttyS1,115200 tty0"\\n'

    def hooks(self) -> dict[str, list[str]]:
        """mmdebstrap hook commands; ``$1`` is the tree being built."""
        modules = "\\n".join(INITRAMFS_MODULES)
        essential = [
            'mkdir -p "$1/etc/initramfs-tools/conf.d"',
            # FSTYPE: the fsck hook cannot detect the root's type inside a build chroot, and
            # without it leaves fsck out, so the root was never checked before mounting.
            "printf 'MODULES=list\\nCOMPRESS=zstd\\nFSTYPE=ext4\\n' "
            '> "$1/etc/initramfs-tools/conf.d/moltbot.conf"',
            f"printf '{modules}\\n' > \"$1/etc/initramfs-tools/modules\"",
            # Build no initramfs while packages install; once, at the end (customize).
            "printf 'update_initramfs=no\\nbackup_initramfs=no\\n' "
            '> "$1/etc/initramfs-tools/update-initramfs.conf"',
            'mkdir -p "$1/etc/default"',
            f"printf '{self._raspi_firmware_defaults()}' > \"$1/etc/default/raspi-firmware\"",
        ]
        customize = [
            f'chroot "$1" useradd --system --uid {APP_UID} --user-group --home-dir '
            f"/var/lib/moltbot --no-create-home --shell /usr/sbin/nologin "
            f"--groups audio,video {APP_USER}",
        ]
        for admin in self.admins:
            customize.append(
                f'chroot "$1" useradd --create-home --shell /bin/bash --groups sudo {admin.name}'
            )
            # No password: the account is locked for password logins, SSH keys only.
            customize.append(f'chroot "$1" passwd --lock {admin.name}')
            if admin.ssh_keys:
                keys = "\\n".join(admin.ssh_keys)
                home = f'"$1/home/{admin.name}/.ssh"'
                customize += [
                    f"mkdir -p {home}",
                    f"printf '%b\\n' {shlex.quote(keys)} > {home}/authorized_keys",
                    f"chmod 700 {home} && chmod 600 {home}/authorized_keys",
                    f'chroot "$1" chown -R {admin.name}:{admin.name} /home/{admin.name}/.ssh',
                ]
        customize += [
            # Per-device secrets must not ship: SSH host keys are made at first boot.
            'rm -f "$1"/etc/ssh/ssh_host_*',
            ': > "$1/etc/machine-id"',
            'rm -f "$1/var/lib/dbus/machine-id"',
        ]
        if BOOT_PACKAGES[self.boot_medium]:
            customize += [
                "printf 'update_initramfs=yes\\nbackup_initramfs=no\\n' "
                '> "$1/etc/initramfs-tools/update-initramfs.conf"',
                'chroot "$1" update-initramfs -c -k all',
            ]
        customize.append('rm -rf "$1"/var/cache/apt/*.bin "$1"/var/lib/apt/lists/*')
        return {"essential-hook": essential, "customize-hook": customize}


def ensure_binfmt() -> None:
    """Make arm64 binaries runnable here (qemu-user-static through binfmt_misc)."""
    if platform.machine() in ("aarch64", "arm64"):
        return
    handler = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if handler.exists():
        return
    if os.geteuid() != 0:
        raise ToolError(
            "arm64 binaries cannot run on this host: binfmt_misc has no qemu-aarch64 handler",
            where=str(handler),
            hint="as root: apt-get install qemu-user-static binfmt-support; mount -t binfmt_misc "
            "binfmt_misc /proc/sys/fs/binfmt_misc; update-binfmts --enable "
            "(`make image` does this when run as root)",
        )
    if not Path("/proc/sys/fs/binfmt_misc/register").exists():
        run(
            ["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"],
            step="mount binfmt_misc",
        )
    run(["update-binfmts", "--enable"], step="enable the qemu binfmt handlers")
    if not handler.exists():
        raise ToolError(
            "qemu-aarch64 is still not registered with binfmt_misc",
            where=str(handler),
            hint="apt-get install qemu-user-static, then update-binfmts --enable qemu-aarch64",
        )


def default_cache_dir() -> Path:
    configured = os.environ.get("MOLTBOT_IMAGE_CACHE")
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "moltbot-image"


def build_rootfs(spec: RootfsSpec, cache_dir: Path) -> tuple[Path, bool]:
    """The rootfs tarball for ``spec``: from the cache when present, else built. (path, cached)"""
    cache_dir.mkdir(parents=True, exist_ok=True)
    tarball = cache_dir / f"rootfs-{spec.digest()[:20]}.tar"
    if tarball.is_file():
        logger.info("rootfs from the cache: %s", tarball)
        return tarball, True
    if os.geteuid() != 0:
        raise ToolError(
            "building the root file system needs root (device nodes, file owners)",
            where="mmdebstrap",
            hint="run `sudo make image`, or reuse a cached rootfs (MOLTBOT_IMAGE_CACHE)",
        )
    require("mmdebstrap")
    ensure_binfmt()
    partial = tarball.with_suffix(".tar.partial")
    argv: list[str] = [
        "mmdebstrap",
        "--arch=arm64",
        "--variant=apt",
        "--mode=root",
        "--format=tar",
        f"--components={','.join(spec.components)}",
        f"--include={','.join(spec.all_packages)}",
        "--dpkgopt=force-confdef",
        "--dpkgopt=force-confold",
        '--aptopt=Acquire::Retries "3"',
    ]
    for hook, commands in spec.hooks().items():
        argv += [f"--{hook}={command}" for command in commands]
    argv += [spec.suite, str(partial), spec.mirror]
    environ_epoch = (
        {"SOURCE_DATE_EPOCH": str(spec.source_date_epoch)} if spec.source_date_epoch else {}
    )
    previous = {key: os.environ.get(key) for key in environ_epoch}
    os.environ.update(environ_epoch)
    try:
        run(argv, step="build the root file system (mmdebstrap)", stream=True)
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    partial.replace(tarball)
    _prune(cache_dir, keep=tarball)
    return tarball, False


def _prune(cache_dir: Path, keep: Path, *, entries: int = 3) -> None:
    """Keep the newest few rootfs tarballs; each is hundreds of MB."""
    tarballs = sorted(cache_dir.glob("rootfs-*.tar"), key=lambda p: p.stat().st_mtime)
    for old in tarballs[:-entries]:
        if old != keep:
            old.unlink(missing_ok=True)


def extract_rootfs(tarball: Path, target: Path) -> None:
    """Unpack with owners, modes, device nodes and extended attributes intact (needs root)."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    run(
        ["tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", tarball, "-C", target],
        step="unpack the root file system",
    )
