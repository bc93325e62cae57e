"""RAUC 1.8 for real on this host: install a signed bundle into a file-backed slot, "reboot"
the way U-Boot's boot script would, gate the new slot, mark it good or bad.

What runs is real: Debian's ``rauc`` (bundle, info, service, install, status, mark-*), a private
``dbus-daemon`` session bus (RAUC's CLI talks to its service over D-Bus; ``DBUS_STARTER_BUS_TYPE
=session`` makes both use the session bus), ``bootloader=uboot`` writing a real U-Boot
environment through ``fw_setenv``/``fw_printenv`` (libubootenv) — only the environment lives in
a 16 KiB file named by a ``fw_env.config`` instead of on an eMMC, and the slots are ext4 image
files. The bundle is mounted from a loop device, so this needs root. What cannot exist here is
the boot itself: ``RaucHost.boot()`` does what the U-Boot script does with BOOT_ORDER and
BOOT_<x>_LEFT, then restarts the service with ``--override-boot-slot``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.update.errors import BootStateError, RaucError, UpdateSourceError
from edge.update.health_gate import (
    CheckResult,
    HealthCheck,
    Verdict,
    apply_outcome,
    run_health_gate,
)
from edge.update.install import install_update
from edge.update.rauc import RaucClient

TOOLS = {
    "rauc": "rauc",
    "dbus-daemon": "dbus-daemon",
    "fw_printenv": "libubootenv-tool",
    "fw_setenv": "libubootenv-tool",
    "mkfs.ext4": "e2fsprogs",
    "mksquashfs": "squashfs-tools",
    "openssl": "openssl",
}


def missing() -> str | None:
    for tool, package in TOOLS.items():
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package {package})"
    if os.geteuid() != 0:
        return "rauc install mounts the bundle on a loop device: run as root"
    if not Path("/dev/loop-control").exists():
        return "no loop devices here (/dev/loop-control)"
    return None


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(missing() is not None, reason=str(missing())),
]

COMPATIBLE = "moltbot-test-board"
SLOT_BYTES = 16 * 2**20
ATTEMPTS = 3
BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:tmpdir=/tmp</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""


def run(*argv: str | Path) -> str:
    result = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"{argv}: {result.stdout}{result.stderr}"
    return result.stdout


class RaucHost:
    """Two ext4 slot files, a U-Boot env file, a signing key, a bus and a RAUC service."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "system.conf"
        self.fw_config = root / "fw_env.config"
        self.bus: subprocess.Popen[str] | None = None
        self.service: subprocess.Popen[bytes] | None = None
        self.bus_address = ""
        for name in ("slot-a.img", "slot-b.img"):
            (root / name).write_bytes(b"")
            os.truncate(root / name, SLOT_BYTES)
            run("mkfs.ext4", "-q", "-F", "-L", "factory", root / name)
        self._uboot_env()
        self._signing_key()
        self.conf.write_text(
            f"[system]\ncompatible={COMPATIBLE}\nbootloader=uboot\n"
            f"data-directory={root / 'rauc-data'}\nmountprefix={root / 'mnt'}\n\n"
            f"[keyring]\npath={root / 'ca.cert.pem'}\n\n"
            f"[slot.rootfs.0]\ndevice={root / 'slot-a.img'}\ntype=ext4\nbootname=A\n\n"
            f"[slot.rootfs.1]\ndevice={root / 'slot-b.img'}\ntype=ext4\nbootname=B\n"
        )

    def _uboot_env(self) -> None:
        """A file-backed U-Boot env, and fw_* wrappers on the service's PATH that use it."""
        env_file = self.root / "uboot.env"
        env_file.write_bytes(b"")
        os.truncate(env_file, 0x4000)
        self.fw_config.write_text(f"{env_file} 0x0 0x4000\n")
        defaults = self.root / "uboot-defaults.txt"
        defaults.write_text(f"BOOT_ORDER=A B\nBOOT_A_LEFT={ATTEMPTS}\nBOOT_B_LEFT={ATTEMPTS}\n")
        run("fw_setenv", "-c", self.fw_config, "-f", defaults, "BOOT_ORDER", "A B")
        wrappers = self.root / "bin"
        wrappers.mkdir()
        for tool in ("fw_printenv", "fw_setenv"):
            wrapper = wrappers / tool
            wrapper.write_text(f'#!/bin/sh\nexec {shutil.which(tool)} -c "{self.fw_config}" "$@"\n')
            wrapper.chmod(0o755)

    def _signing_key(self) -> None:
        run(
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", self.root / "ca.key.pem", "-out", self.root / "ca.cert.pem",
            "-subj", "/CN=moltbot update test", "-days", "30",
        )  # fmt: skip

    def env(self) -> dict[str, str]:
        return {"DBUS_SESSION_BUS_ADDRESS": self.bus_address, "DBUS_STARTER_BUS_TYPE": "session"}

    def client(self, fw_config: Path | None = None) -> RaucClient:
        return RaucClient(
            system_conf=self.conf,
            fw_env_config=fw_config or self.fw_config,
            environment=self.env(),
        )

    def start_bus(self) -> None:
        (self.root / "bus.conf").write_text(BUS_CONFIG)
        self.bus = subprocess.Popen(
            [
                "dbus-daemon",
                f"--config-file={self.root / 'bus.conf'}",
                "--nofork",
                "--print-address",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.bus.stdout is not None
        self.bus_address = self.bus.stdout.readline().strip()
        assert self.bus_address.startswith("unix:"), self.bus_address

    def start_service(self, booted: str) -> None:
        """``rauc service`` as if ``booted`` had been started by the bootloader."""
        self.stop_service()
        environ = {**os.environ, **self.env()}
        environ["PATH"] = f"{self.root / 'bin'}{os.pathsep}{environ['PATH']}"
        log = (self.root / "rauc-service.log").open("ab")
        self.service = subprocess.Popen(
            ["rauc", f"--conf={self.conf}", "service", f"--override-boot-slot={booted}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environ,
        )
        log.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                self.client().status()
                return
            except RaucError:
                time.sleep(0.1)
        raise AssertionError(f"rauc service did not come up: {self.service_log()}")

    def stop_service(self) -> None:
        if self.service is not None:
            self.service.terminate()
            self.service.wait(timeout=10)
            self.service = None

    def stop(self) -> None:
        self.stop_service()
        if self.bus is not None:
            self.bus.terminate()
            self.bus.wait(timeout=10)
            if self.bus.stdout is not None:
                self.bus.stdout.close()

    def service_log(self) -> str:
        path = self.root / "rauc-service.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def uboot(self) -> dict[str, str]:
        out = run("fw_printenv", "-c", self.fw_config, "BOOT_ORDER", "BOOT_A_LEFT", "BOOT_B_LEFT")
        return dict(line.split("=", 1) for line in out.splitlines())

    def boot(self) -> str:
        """What the U-Boot script does: the first slot in BOOT_ORDER with attempts left,
        its counter decremented; then the service starts as on that slot."""
        env = self.uboot()
        for name in env["BOOT_ORDER"].split():
            left = int(env[f"BOOT_{name}_LEFT"])
            if left > 0:
                run("fw_setenv", "-c", self.fw_config, f"BOOT_{name}_LEFT", str(left - 1))
                self.start_service(name)
                return name
        raise AssertionError(f"no slot left to boot: {env}")

    def bundle(self, version: str, compatible: str = COMPATIBLE) -> tuple[Path, bytes]:
        """A signed plain-format bundle with an ext4 rootfs labelled with the version."""
        content = self.root / f"bundle-{version}"
        content.mkdir()
        image = content / "rootfs.ext4"
        image.write_bytes(b"")
        os.truncate(image, 8 * 2**20)
        run("mkfs.ext4", "-q", "-F", "-L", f"v{version}", image)
        (content / "manifest.raucm").write_text(
            f"[update]\ncompatible={compatible}\nversion={version}\n\n"
            "[bundle]\nformat=plain\n\n[image.rootfs]\nfilename=rootfs.ext4\n"
        )
        output = self.root / f"moltbot-{version}.raucb"
        run(
            "rauc", f"--cert={self.root / 'ca.cert.pem'}", f"--key={self.root / 'ca.key.pem'}",
            "bundle", content, output,
        )  # fmt: skip
        return output, image.read_bytes()


@pytest.fixture
def host(tmp_path: Path) -> Iterator[RaucHost]:
    rauc_host = RaucHost(tmp_path)
    try:
        rauc_host.start_bus()
        rauc_host.start_service("A")
        yield rauc_host
    finally:
        rauc_host.stop()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def passing(_remaining_s: float) -> CheckResult:
    return CheckResult(True, "ok")


def test_an_installed_bundle_boots_on_trial_and_the_gate_marks_it_good(
    host: RaucHost, tmp_path: Path
) -> None:
    bundle, image = host.bundle("2.0.0")
    client = host.client()
    lines: list[str] = []
    result = install_update(
        str(bundle), sha256_of(bundle), tmp_path / "data" / "updates", client, emit=lines.append
    )
    assert result.next_slot == "rootfs.1", host.service_log()
    assert host.uboot() == {"BOOT_ORDER": "B A", "BOOT_A_LEFT": "3", "BOOT_B_LEFT": "3"}
    assert (tmp_path / "slot-b.img").read_bytes()[: len(image)] == image
    assert any(line.startswith("install  90% Copying image to rootfs.1") for line in lines)
    # the bundle is gone once installed; what is left is the record the next boot reads
    assert [p.name for p in (tmp_path / "data" / "updates").iterdir()] == ["pending.json"]

    assert host.boot() == "B"
    report = client.status()
    booted = report.booted_slot()
    assert booted is not None
    assert (booted.name, booted.bundle_version, booted.attempts_left) == ("rootfs.1", "2.0.0", 2)
    assert report.awaiting_confirmation(ATTEMPTS)

    outcome = run_health_gate(
        booted.name,
        awaiting_confirmation=report.awaiting_confirmation(ATTEMPTS),
        checks=[HealthCheck("service", passing)],
        deadline_s=5,
    )
    reboots: list[str] = []
    apply_outcome(
        outcome,
        mark_good=client.mark_good,
        mark_bad=client.mark_bad,
        reboot=lambda: reboots.append("reboot"),
    )
    assert outcome.verdict is Verdict.MARK_GOOD
    assert reboots == []
    assert host.uboot()["BOOT_B_LEFT"] == "3"
    assert not client.status().awaiting_confirmation(ATTEMPTS)


def test_a_slot_that_fails_its_gate_is_marked_bad_and_the_next_boot_is_the_old_one(
    host: RaucHost, tmp_path: Path
) -> None:
    bundle, _ = host.bundle("2.0.1")
    client = host.client()
    install_update(str(bundle), sha256_of(bundle), tmp_path / "updates", client, emit=print)
    assert host.boot() == "B"
    outcome = run_health_gate(
        "rootfs.1",
        awaiting_confirmation=client.status().awaiting_confirmation(ATTEMPTS),
        checks=[HealthCheck("service", lambda _s: CheckResult(False, "refused", final=True))],
        deadline_s=5,
    )
    reboots: list[str] = []
    apply_outcome(
        outcome,
        mark_good=client.mark_good,
        mark_bad=client.mark_bad,
        reboot=lambda: reboots.append("reboot"),
    )
    assert reboots == ["reboot"]
    assert host.uboot()["BOOT_ORDER"] == "A"
    assert host.uboot()["BOOT_B_LEFT"] == "0"
    assert client.status().boot_primary == "rootfs.0"
    assert host.boot() == "A"


def test_a_bootloader_env_that_cannot_be_written_makes_mark_good_fail_loudly(
    host: RaucHost,
) -> None:
    good_config = host.fw_config.read_text()
    host.fw_config.write_text("/nonexistent/mmcblk0boot1 0x0 0x4000\n")
    try:
        with pytest.raises(BootStateError) as caught:
            host.client().mark_good()
        report = host.client().status()
    finally:
        host.fw_config.write_text(good_config)
    assert "fw_setenv" in str(caught.value)
    assert "/etc/fw_env.config" in str(caught.value)
    assert report.boot_primary is None
    assert report.problems, "an unreadable bootloader is reported, not hidden"


def test_a_bundle_for_another_board_is_refused(host: RaucHost, tmp_path: Path) -> None:
    bundle, _ = host.bundle("9.9.9", compatible="another-board")
    client = host.client()
    assert client.info(bundle).compatible == "another-board"
    with pytest.raises(RaucError, match="Compatible mismatch"):
        client.install(bundle)
    with pytest.raises(UpdateSourceError, match="another-board"):
        install_update(str(bundle), sha256_of(bundle), tmp_path / "updates", client, emit=print)
    assert host.uboot()["BOOT_ORDER"] == "A B"
