"""What the image builder decides before any slow step: rootfs cache key, hooks, system files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from edge.config import MoltbotConfig
from images.app import requirements
from images.build import admins, rootfs_spec
from images.disk import plan_layout
from images.recipe import load_recipe
from images.rootfs import BOOT_PACKAGES, RootfsSpec
from images.system_files import SystemSettings, appliance_config, fstab

REPO = Path(__file__).parents[2]


def spec(**changes: object) -> RootfsSpec:
    base = RootfsSpec(
        suite="bookworm",
        mirror="http://deb.debian.org/debian",
        components=("main", "non-free-firmware"),
        packages=(),
        boot_medium="sd",
        root_partuuid="1234abcd-02",
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def test_rootfs_cache_key_is_stable_and_changes_with_any_input() -> None:
    assert spec().digest() == spec().digest()
    assert spec(packages=("htop",)).digest() != spec().digest()
    assert spec(mirror="http://mirror.example/debian").digest() != spec().digest()
    assert spec(root_partuuid="1234abcd-03").digest() != spec().digest()


def test_pi_rootfs_has_kernel_and_firmware_and_builds_the_initramfs_once_at_the_end() -> None:
    pi = spec()
    assert {"linux-image-arm64", "raspi-firmware"} <= set(pi.all_packages)
    hooks = pi.hooks()
    assert any("update_initramfs=no" in c for c in hooks["essential-hook"])
    assert any("MODULES=list" in c for c in hooks["essential-hook"])
    builds = [c for c in hooks["customize-hook"] if "update-initramfs -c" in c]
    assert len(builds) == 1


def test_jetson_rootfs_has_no_debian_kernel() -> None:
    jetson = spec(boot_medium="emmc")
    assert BOOT_PACKAGES["emmc"] == ()
    assert "linux-image-arm64" not in jetson.all_packages
    assert not any("update-initramfs" in c for c in jetson.hooks()["customize-hook"])


def test_hooks_lock_passwords_and_drop_per_device_secrets() -> None:
    customize = " ; ".join(spec(admins=admins_of(["ssh-ed25519 AAAAk"])).hooks()["customize-hook"])
    assert "passwd --lock admin" in customize
    assert "ssh_host_" in customize and "machine-id" in customize
    assert "chpasswd" not in customize


def admins_of(keys: list[str]) -> tuple[object, ...]:
    from images.rootfs import AdminUser

    return (AdminUser("admin", tuple(keys)),)


def test_default_recipe_gets_a_key_only_admin_and_a_pi_layout() -> None:
    recipe, board = load_recipe(REPO / "images/recipes/rpi4b.yaml", base_dir=REPO)
    assert [a.name for a in admins(recipe)] == ["admin"]
    layout = plan_layout("seed", 256, 2048, 1024)
    built = rootfs_spec(recipe, board.boot_medium, layout.partuuid("root"), 1_700_000_000)
    assert built.root_partuuid == layout.partuuid("root")
    assert built.source_date_epoch is None  # only a pinned snapshot makes mmdebstrap repeatable


def test_fstab_mounts_the_booted_slot_as_root_and_boot_and_data_by_partuuid() -> None:
    layout = plan_layout("seed", 256, 2048, 1024)
    text = fstab(layout)
    assert "/dev/root  /  ext4" in text  # slot A or B: the kernel's root= says which
    assert layout.partuuid("root") not in text and layout.partuuid("root_b") not in text
    assert f"PARTUUID={layout.partuuid('boot')}  /boot/firmware  vfat" in text
    assert "umask=0027" in text  # the site file holds secrets
    assert f"PARTUUID={layout.partuuid('data')}  /var/lib/moltbot  ext4" in text


@pytest.mark.parametrize("has_vosk", [True, False])
def test_image_config_is_a_valid_appliance_config(has_vosk: bool) -> None:
    settings = SystemSettings(
        board="rpi4b",
        hostname="moltbot",
        services={"voice": True, "api": True},
        has_vosk_model=has_vosk,
        boot_medium="sd",
    )
    config = MoltbotConfig.model_validate(appliance_config(settings))
    assert config.device.data_dir == Path("/var/lib/moltbot")
    assert config.voice.enabled is has_vosk  # no model in the image: voice stays off
    assert (config.voice.model_dir is not None) is has_vosk


def test_image_requirements_come_from_pyproject_with_the_voice_extra() -> None:
    names = " ".join(requirements())
    for wanted in ("onnxruntime", "paho-mqtt", "fastapi", "vosk", "sounddevice"):
        assert wanted in names
    assert "pytest" not in names


def test_sd_image_build_refuses_a_jetson_recipe_before_any_slow_step(tmp_path: Path) -> None:
    from images.build import build_image
    from images.run import ToolError

    with pytest.raises(ToolError, match="jetson-bundle"):
        build_image(REPO / "images/recipes/jetson-agx-orin.yaml", tmp_path / "out", tmp_path)
    assert not (tmp_path / "out").exists()


def test_jetson_bundle_refuses_a_pi_recipe_before_any_slow_step(tmp_path: Path) -> None:
    from images.jetson import build_jetson_bundle
    from images.run import ToolError

    with pytest.raises(ToolError, match="moltbot image build"):
        build_jetson_bundle(REPO / "images/recipes/rpi4b.yaml", tmp_path / "out", tmp_path)


def test_every_shipped_recipe_validates(tmp_path: Path) -> None:
    for recipe in sorted((REPO / "images/recipes").glob("*.yaml")):
        parsed, board = load_recipe(recipe, base_dir=REPO)
        assert parsed.board == board.name


def test_tree_digest_follows_content_modes_and_links_not_times(tmp_path: Path) -> None:
    import os

    from images.build import tree_digest

    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/hostname").write_text("moltbot\n")
    (tree / "link").symlink_to("etc/hostname")
    first = tree_digest(tree)
    os.utime(tree / "etc/hostname", (1, 1))
    assert tree_digest(tree) == first
    (tree / "etc/hostname").chmod(0o600)
    assert tree_digest(tree) != first
    (tree / "etc/hostname").chmod(0o644)
    (tree / "etc/hostname").write_text("other\n")
    assert tree_digest(tree) != first
