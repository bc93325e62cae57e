"""First-boot setup steps on a scratch root: growth plan, host name, Wi-Fi, SSH keys, identity."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from edge.config import MoltbotConfig
from edge.system_setup import (
    ADMIN_KEYS_MARK,
    PartitionSpan,
    SetupError,
    admin_user,
    apply_hostname,
    apply_ssh_keys,
    apply_wifi,
    grown_size,
    hostname_for,
    partition_span,
    run_setup,
)

MIB_SECTORS = 2048


def span(start_mib: int, size_mib: int, disk_mib: int) -> PartitionSpan:
    return PartitionSpan(
        "mmcblk0", 3, start_mib * MIB_SECTORS, size_mib * MIB_SECTORS, disk_mib * MIB_SECTORS
    )


def test_last_partition_grows_to_the_end_of_the_card_on_a_mib_boundary() -> None:
    new = grown_size(span(start_mib=2312, size_mib=1024, disk_mib=30_000))
    assert new == (30_000 - 2312) * MIB_SECTORS


def test_partition_that_already_fills_the_card_is_left_alone() -> None:
    assert grown_size(span(start_mib=2312, size_mib=1024, disk_mib=2312 + 1024 + 4)) is None


def test_a_partition_followed_by_another_is_never_grown() -> None:
    middle = PartitionSpan("mmcblk0", 1, 2048, 2048, 64 * 2**21, is_last=False)
    assert grown_size(middle) is None


def test_partition_span_reads_sysfs(tmp_path: Path) -> None:
    disk = tmp_path / "devices" / "vda"
    part = disk / "vda3"
    part.mkdir(parents=True)
    (disk / "size").write_text("8388608\n")
    (part / "partition").write_text("3\n")
    (part / "start").write_text("4751360\n")
    (part / "size").write_text("2097152\n")
    sys_block = tmp_path / "class"
    sys_block.mkdir()
    (sys_block / "vda").symlink_to(disk)
    (sys_block / "vda3").symlink_to(part)
    dev = tmp_path / "vda3"
    dev.touch()
    found = partition_span(dev, sys_block)
    assert found == PartitionSpan("vda", 3, 4751360, 2097152, 8388608, is_last=True)
    earlier = disk / "vda2"
    earlier.mkdir()
    (earlier / "partition").write_text("2\n")
    (earlier / "start").write_text("526336\n")
    assert partition_span(dev, sys_block).is_last
    (earlier / "start").write_text("9000000\n")
    assert not partition_span(dev, sys_block).is_last


def test_partition_span_refuses_a_whole_disk(tmp_path: Path) -> None:
    (tmp_path / "vda").mkdir()
    with pytest.raises(SetupError, match="not a partition"):
        partition_span(tmp_path / "vda", tmp_path)


def test_hostname_comes_from_the_site_else_from_the_device_id() -> None:
    assert (
        hostname_for(MoltbotConfig.model_validate({"system": {"hostname": "line3"}}), "x")
        == "line3"
    )
    assert hostname_for(MoltbotConfig(), "moltbot-1a2b3c4d") == "moltbot-1a2b3c4d"
    assert hostname_for(MoltbotConfig(), "Press_7") == "moltbot-press-7"


def root_with_admin(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/group").write_text("root:x:0:\nsudo:x:27:admin\nmoltbot:x:990:\n")
    (root / "etc/hostname").write_text("moltbot\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tmoltbot\n")
    (root / "home/admin/.ssh").mkdir(parents=True)
    (root / "home/admin/.ssh/authorized_keys").write_text("ssh-ed25519 AAAArecipe builder\n")
    return root


def test_hostname_is_written_once_and_hosts_follows(tmp_path: Path) -> None:
    root = root_with_admin(tmp_path)
    assert apply_hostname(root, "line3-press") is True
    assert (root / "etc/hostname").read_text() == "line3-press\n"
    assert "127.0.1.1\tline3-press" in (root / "etc/hosts").read_text()
    assert "127.0.1.1\tmoltbot" not in (root / "etc/hosts").read_text()
    assert apply_hostname(root, "line3-press") is False


def test_wifi_config_is_private_and_removed_when_the_site_drops_it(tmp_path: Path) -> None:
    root = root_with_admin(tmp_path)
    config = MoltbotConfig.model_validate(
        {"system": {"wifi_ssid": "plant-ot", "wifi_psk": "s3cret-pass", "wifi_country": "DE"}}
    )
    assert apply_wifi(root, config) is True
    conf = root / "etc/wpa_supplicant/wpa_supplicant-wlan0.conf"
    text = conf.read_text()
    assert 'ssid="plant-ot"' in text and 'psk="s3cret-pass"' in text and "country=DE" in text
    assert conf.stat().st_mode & 0o777 == 0o600
    assert apply_wifi(root, config) is False
    assert apply_wifi(root, MoltbotConfig()) is True
    assert not conf.exists()


def test_wifi_passphrase_with_a_quote_is_refused_with_a_reason(tmp_path: Path) -> None:
    config = MoltbotConfig(system={"wifi_ssid": "a", "wifi_psk": SecretStr('x"y')})  # type: ignore[arg-type]
    with pytest.raises(SetupError, match="double quote"):
        apply_wifi(root_with_admin(tmp_path), config)


def test_site_ssh_keys_are_added_beside_the_recipes_and_replaced_not_duplicated(
    tmp_path: Path,
) -> None:
    root = root_with_admin(tmp_path)
    assert admin_user(root) == "admin"
    first = MoltbotConfig.model_validate(
        {"system": {"ssh_authorized_keys": ["ssh-ed25519 AAAAone"]}}
    )
    second = MoltbotConfig.model_validate(
        {"system": {"ssh_authorized_keys": ["ssh-ed25519 AAAAtwo"]}}
    )
    assert apply_ssh_keys(root, first, "admin") is True
    assert apply_ssh_keys(root, first, "admin") is False
    apply_ssh_keys(root, second, "admin")
    lines = (root / "home/admin/.ssh/authorized_keys").read_text().splitlines()
    assert lines == ["ssh-ed25519 AAAArecipe builder", ADMIN_KEYS_MARK, "ssh-ed25519 AAAAtwo"]


def test_setup_makes_identity_and_reports_each_step(tmp_path: Path) -> None:
    root = root_with_admin(tmp_path)
    data = tmp_path / "data"
    config = MoltbotConfig.model_validate({"device": {"data_dir": str(data)}})
    report = run_setup(config, root, grow=False)
    assert report.failed == []
    identity = (data / "device-id").read_text().strip()
    assert (root / "etc/hostname").read_text().strip() == identity
    assert (data / "api-token").stat().st_mode & 0o777 == 0o600
    again = run_setup(config, root, grow=False)
    assert again.steps["hostname"] == "ok"
    assert (data / "device-id").read_text().strip() == identity
