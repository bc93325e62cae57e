"""What a Jetson flash bundle adds on top of NVIDIA's own root file system: the appliance's
config, units (enabled), SSH and sudo policy, and the data dir with its models — as a tree
that becomes the bundle's overlay tarball.

The same files as a Pi image's (``images.system_files``), less what NVIDIA's Ubuntu sample root
file system does its own way: its fstab, its networking (NetworkManager), no boot partition.
RAUC's files are the Jetson's own: ``system.conf`` with ``bootloader=custom`` over NVIDIA's rootfs
A/B (slots APP and APP_b, switched by ``nvbootctrl``) and the backend script that maps RAUC's
calls onto ``nvbootctrl`` (:func:`install_rauc_files`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from edge.board import BoardProfile
from images.ab_slots import KEYRING as RAUC_KEYRING
from images.ab_slots import RAUC_DATA_DIR, install_keyring
from images.build import chown_tree, stage_data
from images.paths import REPO_ROOT
from images.recipe import Recipe
from images.rootfs import APP_UID
from images.system_files import BOOT_MOUNT, DATA_MOUNT, SystemSettings, install_system_files
from images.templates import render

JETSON_FILES = Path(__file__).with_name("jetson")
RAUC_SYSTEM_CONF_TEMPLATE = JETSON_FILES / "rauc-system.conf.in"
RAUC_BACKEND_SCRIPT = JETSON_FILES / "rauc-nvbootctrl-backend.sh"
RAUC_SYSTEM_CONF = Path("etc/rauc/system.conf")
RAUC_BACKEND = Path("usr/lib/moltbot/rauc-nvbootctrl-backend")

# Left to NVIDIA's sample root file system.
NOT_IN_OVERLAY = (
    "etc/fstab",
    "etc/systemd/network",
    "etc/systemd/system/systemd-networkd-wait-online.service.d",
    str(BOOT_MOUNT),
)


def build_overlay(
    recipe: Recipe,
    board: BoardProfile,
    cache_dir: Path,
    tree: Path,
    *,
    compatible: str,
    keyring: Path,
) -> tuple[Path, Path]:
    """The overlay under ``tree`` (replaced if there); returns (tree, its data dir).
    ``compatible`` and ``keyring`` (the update CA certificate) are RAUC's."""
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    settings = SystemSettings(
        board=board.name,
        hostname=recipe.hostname,
        services={str(name): enabled for name, enabled in recipe.services.items()},
        has_vosk_model=recipe.vosk_model is not None,
        boot_medium=board.boot_medium,
    )
    install_system_files(tree, None, settings)
    for relative in NOT_IN_OVERLAY:
        path = tree / relative
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    boot = tree / BOOT_MOUNT.parent
    if boot.is_dir() and not any(boot.iterdir()):
        boot.rmdir()
    for user in recipe.users:
        if user.ssh_keys:
            ssh = tree / "home" / user.name / ".ssh"
            ssh.mkdir(parents=True, mode=0o700)
            (ssh / "authorized_keys").write_text("\n".join(user.ssh_keys) + "\n")
            (ssh / "authorized_keys").chmod(0o600)
    install_rauc_files(tree, compatible=compatible, keyring=keyring)
    data = tree / DATA_MOUNT
    stage_data(recipe, data, REPO_ROOT, cache_dir)
    chown_tree(data, APP_UID)
    data.chmod(0o750)
    return tree, data


def render_rauc_system_conf(compatible: str) -> str:
    """The Jetson's ``/etc/rauc/system.conf`` (``images/jetson/rauc-system.conf.in``)."""
    return render(
        RAUC_SYSTEM_CONF_TEMPLATE,
        {
            "COMPATIBLE": compatible,
            "DATA_DIR": f"/{RAUC_DATA_DIR}",
            "BACKEND": f"/{RAUC_BACKEND}",
            "KEYRING": f"/{RAUC_KEYRING}",
        },
    )


def install_rauc_files(tree: Path, *, compatible: str, keyring: Path) -> None:
    """RAUC's system.conf, its nvbootctrl backend and the keyring (the CA certificate only)."""
    install_keyring(tree, keyring)
    conf = tree / RAUC_SYSTEM_CONF
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(render_rauc_system_conf(compatible))
    conf.chmod(0o644)
    backend = tree / RAUC_BACKEND
    backend.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(RAUC_BACKEND_SCRIPT, backend)
    backend.chmod(0o755)
