"""The Jetson's RAUC system.conf (images/jetson/rauc-system.conf.in) as the flash bundle's
overlay installs it: loaded by the real ``rauc`` (1.8, Debian's) and put beside its backend and
the keyring, the CA certificate only.

rauc loads and checks its system.conf before it looks at a bundle, so ``rauc --conf=FILE info
MISSING.raucb`` tells a config it accepts ("No such file") from one it refuses ("Failed to load
system config"); no D-Bus service is needed. NVIDIA's APP/APP_b partitions are not here: the
slots' devices are only named, not opened.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from images.jetson_overlay import (
    RAUC_BACKEND,
    RAUC_KEYRING,
    RAUC_SYSTEM_CONF,
    install_rauc_files,
    render_rauc_system_conf,
)
from images.run import ToolError
from images.update_bundle import compatible_for

COMPATIBLE = compatible_for("jetson-agx-orin", "jetson-agx-orin")
CA_CERT = """-----BEGIN CERTIFICATE-----
MIIBfake
-----END CERTIFICATE-----
"""


def rauc_loads(conf: Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("rauc") is None:
        pytest.skip("rauc is not installed (Debian package: rauc)")
    return subprocess.run(
        ["rauc", f"--conf={conf}", "info", str(conf.with_name("missing.raucb"))],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def test_real_rauc_accepts_the_jetson_system_conf(tmp_path: Path) -> None:
    conf = tmp_path / "system.conf"
    conf.write_text(render_rauc_system_conf(COMPATIBLE))
    result = rauc_loads(conf)
    assert "Failed to load system config" not in result.stderr, result.stderr
    assert "No such file" in result.stderr, result.stderr


def test_real_rauc_refuses_the_conf_without_its_custom_backend(tmp_path: Path) -> None:
    """The check above can fail: the same file less its backend line is refused."""
    conf = tmp_path / "system.conf"
    text = render_rauc_system_conf(COMPATIBLE)
    conf.write_text("".join(line for line in text.splitlines(True) if "custom-backend" not in line))
    result = rauc_loads(conf)
    assert "Failed to load system config" in result.stderr
    assert "No custom bootloader backend defined" in result.stderr


def test_system_conf_names_nvidias_ab_partitions_the_backend_and_the_compatible() -> None:
    conf = configparser.ConfigParser()
    conf.read_string(render_rauc_system_conf(COMPATIBLE))
    assert dict(conf["system"]) == {
        "compatible": "moltbot-jetson-agx-orin-jetson-agx-orin",
        "bootloader": "custom",
        "data-directory": "/var/lib/moltbot/rauc",
    }
    assert conf["handlers"]["bootloader-custom-backend"] == f"/{RAUC_BACKEND}"
    assert conf["keyring"]["path"] == f"/{RAUC_KEYRING}"
    slots = {
        section: (conf[section]["device"], conf[section]["bootname"], conf[section]["type"])
        for section in conf.sections()
        if section.startswith("slot.")
    }
    assert slots == {
        "slot.rootfs.0": ("/dev/disk/by-partlabel/APP", "A", "ext4"),
        "slot.rootfs.1": ("/dev/disk/by-partlabel/APP_b", "B", "ext4"),
    }


def test_overlay_gets_the_conf_an_executable_backend_and_the_ca_certificate(
    tmp_path: Path,
) -> None:
    keyring = tmp_path / "ca.cert.pem"
    keyring.write_text(CA_CERT)
    tree = tmp_path / "overlay"
    install_rauc_files(tree, compatible=COMPATIBLE, keyring=keyring)
    assert (tree / RAUC_KEYRING).read_text() == CA_CERT
    assert (tree / RAUC_BACKEND).stat().st_mode & 0o777 == 0o755
    assert (tree / RAUC_SYSTEM_CONF).read_text() == render_rauc_system_conf(COMPATIBLE)
    files = sorted(str(p.relative_to(tree)) for p in tree.rglob("*") if p.is_file())
    assert files == sorted(str(p) for p in (RAUC_SYSTEM_CONF, RAUC_KEYRING, RAUC_BACKEND))


def test_a_keyring_holding_a_private_key_is_refused(tmp_path: Path) -> None:
    keyring = tmp_path / "ca.cert.pem"
    keyring.write_text(
        CA_CERT + "-----BEGIN PRIVATE KEY-----\nMIIfake\n-----END PRIVATE KEY-----\n"
    )
    with pytest.raises(ToolError, match="holds a private key"):
        install_rauc_files(tmp_path / "overlay", compatible=COMPATIBLE, keyring=keyring)
    assert not (tmp_path / "overlay" / RAUC_KEYRING).exists()


def test_a_missing_keyring_names_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="keyring") as caught:
        install_rauc_files(tmp_path / "o", compatible=COMPATIBLE, keyring=tmp_path / "none.pem")
    assert caught.value.hint is not None and "keys init" in caught.value.hint
