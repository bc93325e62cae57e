"""Boot a built image under ``qemu-system-aarch64`` (TCG, no KVM needed), on two machines.

``virt`` (the application's release gate): the image's own kernel and initrd (read from its boot
partition with mtools), the whole image as a virtio disk (so fstab, the data partition and
first-boot growth are exercised), user-mode networking with the appliance's API port forwarded
to loopback; the guest reaches the host at 10.0.2.2.

``raspi4b`` (QEMU 10, the Pi's own boot path): the same kernel and initrd with the image's own
``bcm2711-rpi-4-b.dtb`` and the image as the SD card behind the emulated emmc2 controller
(``sdhci-iproc``), so the root file system is found the way a real Pi 4 finds it. The DTB is a
test copy with the edits in ``RASPI4B_DTB_EDITS``: each one is hardware QEMU does not emulate.
No network there (QEMU has no GENET).

The serial console goes to a log file that callers wait on.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from images.devicetree import DeviceTree
from images.disk import fat_offset, read_table
from images.run import ToolError, require, run

HOST_FROM_GUEST = "10.0.2.2"
Machine = Literal["virt", "raspi4b"]
RASPI4B_DTB = "bcm2711-rpi-4-b.dtb"
# QEMU's raspi4b leaves clocks it does not model half-initialised; without this the kernel
# switches "unused" ones off under drivers that still need them (the UARTs).
RASPI4B_CMDLINE = "console=ttyAMA0,115200 clk_ignore_unused"


@dataclass(frozen=True)
class DtbEdit:
    """One change to the test copy of the Pi's DTB, with the QEMU limit that forces it."""

    compatible: str
    delete_property: str | None  # None: the node is disabled (status = "disabled")
    reason: str


_NOT_EMULATED = "not emulated by QEMU's raspi4b; its driver waits on or faults at empty registers"
RASPI4B_DTB_EDITS = (
    DtbEdit(
        "brcm,bcm2711-l2-intc", None, f"the HDMI block's L2 interrupt controller is {_NOT_EMULATED}"
    ),
    DtbEdit("brcm,brcm2711-dvp", None, f"the HDMI clock/reset block (DVP) is {_NOT_EMULATED}"),
    DtbEdit("brcm,bcm2711-hdmi0", None, f"HDMI 0 is {_NOT_EMULATED}"),
    DtbEdit("brcm,bcm2711-hdmi1", None, f"HDMI 1 is {_NOT_EMULATED}"),
    DtbEdit("brcm,bcm2711-hdmi-i2c", None, f"the HDMI DDC I2C is {_NOT_EMULATED}"),
    DtbEdit("brcm,bcm2711-pixelvalve0", None, f"pixel valve 0 is {_NOT_EMULATED}"),
    DtbEdit("brcm,bcm2711-pixelvalve1", None, f"pixel valve 1 is {_NOT_EMULATED}"),
    DtbEdit("brcm,bcm2711-pixelvalve2", None, f"pixel valve 2 is {_NOT_EMULATED}"),
    DtbEdit("brcm,bcm2711-pixelvalve4", None, f"pixel valve 4 is {_NOT_EMULATED}"),
    DtbEdit("brcm,bcm2711-hvs", None, f"the HVS video scaler is {_NOT_EMULATED}"),
    DtbEdit("brcm,bcm2835-txp", None, f"the TXP writeback is {_NOT_EMULATED}"),
    DtbEdit("brcm,bcm2711-vc5", None, f"the VC5 display pipeline is {_NOT_EMULATED}"),
    DtbEdit("brcm,2711-v3d", None, f"the V3D GPU is {_NOT_EMULATED}"),
    DtbEdit("brcm,bcm2711-pcie", None, f"the PCIe root complex is {_NOT_EMULATED}"),
    DtbEdit("brcm,bcm2711-genet-v5", None, f"the GENET Ethernet MAC is {_NOT_EMULATED}"),
    DtbEdit("brcm,bcm2711-rng200", None, f"the RNG200 is {_NOT_EMULATED} (QEMU has the older one)"),
    DtbEdit("brcm,bcm2711-avs-monitor", None, f"the AVS monitor (thermal) is {_NOT_EMULATED}"),
    DtbEdit("brcm,bcm2711-thermal", None, f"the thermal sensor is {_NOT_EMULATED}"),
    # The SD card's supplies: the regulators stay (their drivers must load from the initramfs,
    # as on a Pi), only their wiring to the firmware GPIO expander goes: QEMU's firmware
    # mailbox does not answer the expander's GPIO requests, so a regulator switched through it
    # never comes up, and emmc2 would wait for it forever.
    DtbEdit(
        "regulator-fixed",
        "gpio",
        "the SD card's power switch is a firmware GPIO, which QEMU does not emulate: the "
        "regulator stays, always on",
    ),
    DtbEdit(
        "brcm,bcm2711-emmc2",
        "vqmmc-supply",
        "the SD I/O voltage regulator is switched by a firmware GPIO, which QEMU does not "
        "emulate: the card stays at 3.3 V signalling (QEMU's SD card needs no 1.8 V)",
    ),
)


@dataclass
class QemuBoot:
    image: Path
    workdir: Path
    api_port: int
    memory_mib: int = 1536
    cpus: int = 2
    extra_cmdline: str = "moltbot.selftest=1"
    machine: Machine = "virt"
    log_name: str = "console.log"
    console_log: Path = field(init=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    started_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.console_log = self.workdir / self.log_name

    def _boot_files(self) -> tuple[Path, Path, str]:
        target = f"{self.image}@@{fat_offset(self.image)}"
        config = run(["mtype", "-i", target, "::config.txt"], step="read config.txt")
        kernel = re.search(r"^kernel=(\S+)", config, re.MULTILINE)
        initrd = re.search(r"^initramfs (\S+)", config, re.MULTILINE)
        if not kernel or not initrd:
            raise ToolError(
                "config.txt names no kernel or initramfs",
                where=f"{self.image}: config.txt",
                hint="rebuild the image",
            )
        files = []
        for name in (kernel.group(1), initrd.group(1)):
            local = self.workdir / name
            run(["mcopy", "-o", "-i", target, f"::{name}", local], step=f"extract {name}")
            files.append(local)
        table = read_table(self.image)
        disk_id = str(table["id"]).removeprefix("0x")
        return files[0], files[1], f"{disk_id}-02"

    def command(self) -> list[str]:
        kernel, initrd, root_partuuid = self._boot_files()
        root = f"root=PARTUUID={root_partuuid} rootfstype=ext4 rootwait"
        if self.machine == "raspi4b":
            return self._raspi4b_argv(kernel, initrd, f"{RASPI4B_CMDLINE} {root}")
        return self._virt_argv(kernel, initrd, f"{root} console=ttyAMA0")

    def _common_argv(self, kernel: Path, initrd: Path, cmdline: str) -> list[str]:
        return [
            require("qemu-system-aarch64"),
            "-nographic",
            "-no-reboot",
            "-kernel",
            str(kernel),
            "-initrd",
            str(initrd),
            "-append",
            f"{cmdline} systemd.show_status=1 {self.extra_cmdline}",
        ]

    def _virt_argv(self, kernel: Path, initrd: Path, cmdline: str) -> list[str]:
        return [
            *self._common_argv(kernel, initrd, cmdline),
            "-M",
            "virt",
            "-cpu",
            "cortex-a72",
            "-accel",
            "tcg,thread=multi",
            "-smp",
            str(self.cpus),
            "-m",
            str(self.memory_mib),
            "-drive",
            f"file={self.image},if=none,format=raw,id=disk0,cache=unsafe",
            "-device",
            "virtio-blk-pci,drive=disk0",
            "-netdev",
            f"user,id=net0,hostfwd=tcp:127.0.0.1:{self.api_port}-:8080",
            "-device",
            "virtio-net-pci,netdev=net0,romfile=",
            "-device",
            "virtio-rng-pci",
        ]

    def _raspi4b_argv(self, kernel: Path, initrd: Path, cmdline: str) -> list[str]:
        grow_to_power_of_two(self.image)
        dtb = self.workdir / f"qemu-{RASPI4B_DTB}"
        target = f"{self.image}@@{fat_offset(self.image)}"
        run(["mcopy", "-o", "-i", target, f"::{RASPI4B_DTB}", dtb], step="extract the Pi's DTB")
        apply_dtb_edits(dtb, RASPI4B_DTB_EDITS)
        return [
            *self._common_argv(kernel, initrd, cmdline),
            "-M",
            "raspi4b",
            "-accel",
            "tcg,thread=multi",
            "-dtb",
            str(dtb),
            # `if=sd` would put the card on the GPIO-routed Arasan/SDHOST bus (the Pi 4's Wi-Fi
            # slot); the SD slot is emmc2, the first generic-sdhci on the system bus.
            "-drive",
            f"file={self.image},if=none,id=card,format=raw,cache=unsafe",
            "-device",
            "sd-card,drive=card,bus=/generic-sdhci/sd-bus",
        ]

    def start(self) -> None:
        argv = self.command()
        self.started_at = time.monotonic()
        with self.console_log.open("wb") as log:
            self._process = subprocess.Popen(  # noqa: S603 - argv built above
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def console(self) -> str:
        return self.console_log.read_text(errors="replace") if self.console_log.exists() else ""

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match[str] | None:
        """The first console match of ``pattern``; None on timeout or when QEMU exited."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = compiled.search(self.console())
            if found:
                return found
            if self._process is not None and self._process.poll() is not None:
                return None
            time.sleep(1.0)
        return None

    def power_cut(self) -> None:
        """SIGKILL: the guest gets no shutdown, its unwritten caches are lost, as in a power cut."""
        if self._process is None:
            return
        self._process.kill()
        self._process.wait()
        self._process = None

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._process = None


def grow_to_power_of_two(image: Path) -> int:
    """QEMU's SD card must be a power of two in size: grow the (test copy of the) image up to
    the next one. The partitions stay as they are; the data partition grows at first boot."""
    size = image.stat().st_size
    wanted = 1 << (size - 1).bit_length()
    if wanted != size:
        with image.open("r+b") as stream:
            stream.truncate(wanted)
    return wanted


def apply_dtb_edits(dtb: Path, edits: tuple[DtbEdit, ...]) -> list[str]:
    """Apply ``edits`` to ``dtb`` in place with ``fdtput``; returns what was changed."""
    fdtput = require("fdtput")
    tree = DeviceTree.read(dtb)
    changed = []
    for edit in edits:
        for node in tree.nodes.values():
            if edit.compatible not in node.compatible:
                continue
            if edit.delete_property is None:
                argv = [fdtput, "-t", "s", str(dtb), node.path, "status", "disabled"]
                changed.append(f"{node.path}: disabled ({edit.reason})")
            elif edit.delete_property in node.properties:
                argv = [fdtput, "-d", str(dtb), node.path, edit.delete_property]
                changed.append(f"{node.path}: {edit.delete_property} removed ({edit.reason})")
            else:
                continue
            run(argv, step=f"edit the test DTB: {node.path}")
    return changed
