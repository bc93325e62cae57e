"""Boot a built image under ``qemu-system-aarch64`` (TCG, no KVM needed), on two machines.

``virt`` (the application's release gate): Debian's U-Boot for QEMU as the firmware runs the
image's own ``boot.scr``, which picks root slot A or B by RAUC's boot counters and boots that
slot's kernel and initrd, as U-Boot does on the Pi; the whole image is a virtio disk (so fstab,
the slots, the data partition and first-boot growth are exercised), user-mode networking with
the appliance's API port forwarded to loopback; the guest reaches the host at 10.0.2.2.

``raspi4b`` (QEMU 10, the Pi's own boot path): slot A's kernel and initrd with the image's own
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

from images import debugfs
from images.devicetree import DeviceTree
from images.disk import SECTOR, fat_offset, read_table
from images.run import ToolError, require, run
from images.uboot_script import EXTRA_ARGS_FILE, EXTRA_ARGS_VARIABLE

HOST_FROM_GUEST = "10.0.2.2"
U_BOOT_QEMU = Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin")
Machine = Literal["virt", "raspi4b"]
RASPI4B_DTB = "bcm2711-rpi-4-b.dtb"
# QEMU's raspi4b leaves clocks it does not model half-initialised; without this the kernel
# switches "unused" ones off under drivers that still need them (the UARTs). Its power manager
# resets the machine at once when the watchdog is started (it does not count down), and
# systemd starts it (RuntimeWatchdogSec): the watchdog driver stays unloaded here. The virt
# machine's i6300esb counts down, and the virt boot test checks that systemd armed it.
RASPI4B_CMDLINE = "console=ttyAMA0,115200 clk_ignore_unused modprobe.blacklist=bcm2835_wdt"


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
    no_reboot: bool = True  # a guest reboot ends QEMU (off: U-Boot starts again, A/B tests)
    console_log: Path = field(init=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    started_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.console_log = self.workdir / self.log_name

    def _slot_boot_files(self) -> tuple[Path, Path, str]:
        """Slot A's kernel and initrd (read from its /boot with debugfs) and its PARTUUID: what
        U-Boot would load, for the raspi4b machine, which runs no Pi firmware to start it."""
        table = read_table(self.image)
        slot_a = table["partitions"][1]  # type: ignore[index]
        source = f"{self.image}?offset={int(slot_a['start']) * SECTOR}"
        names = debugfs.names_in(source, "/boot")
        files = []
        for prefix in ("vmlinuz-", "initrd.img-"):
            found = sorted(name for name in names if name.startswith(prefix))
            if not found:
                raise ToolError(
                    f"slot A has no /boot/{prefix}*",
                    where=f"{self.image}: partition 2",
                    hint="rebuild the image",
                )
            files.append(debugfs.dump(source, f"/boot/{found[-1]}", self.workdir / found[-1]))
        disk_id = str(table["id"]).removeprefix("0x")
        return files[0], files[1], f"{disk_id}-02"

    def _write_extra_args(self) -> None:
        """The test's kernel arguments, in the FAT file boot.scr appends to the command line."""
        text = f"{EXTRA_ARGS_VARIABLE}=systemd.show_status=1 {self.extra_cmdline}\n"
        local = self.workdir / EXTRA_ARGS_FILE
        local.write_text(text)
        target = f"{self.image}@@{fat_offset(self.image)}"
        run(["mcopy", "-o", "-i", target, local, f"::{EXTRA_ARGS_FILE}"], step="write boot args")

    def command(self) -> list[str]:
        if self.machine == "raspi4b":
            kernel, initrd, root_partuuid = self._slot_boot_files()
            root = f"root=PARTUUID={root_partuuid} rootfstype=ext4 rootwait rauc.slot=A"
            return self._raspi4b_argv(kernel, initrd, f"{RASPI4B_CMDLINE} {root}")
        self._write_extra_args()
        return self._virt_argv()

    def _common_argv(self) -> list[str]:
        return [require("qemu-system-aarch64"), "-nographic", *(["-no-reboot"] * self.no_reboot)]

    def _virt_argv(self) -> list[str]:
        """The image boots as on the Pi: U-Boot (Debian's qemu_arm64 build as the firmware)
        runs the image's own boot.scr, which picks the root slot and boots its kernel."""
        return [
            *self._common_argv(),
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
            "-bios",
            str(require_file(U_BOOT_QEMU, "u-boot-qemu")),
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
            # A hardware watchdog, as the Pi's bcm2835_wdt: systemd arms it (RuntimeWatchdogSec)
            "-device",
            "i6300esb",
        ]

    def _raspi4b_argv(self, kernel: Path, initrd: Path, cmdline: str) -> list[str]:
        grow_to_power_of_two(self.image)
        dtb = self.workdir / f"qemu-{RASPI4B_DTB}"
        target = f"{self.image}@@{fat_offset(self.image)}"
        run(["mcopy", "-o", "-i", target, f"::{RASPI4B_DTB}", dtb], step="extract the Pi's DTB")
        apply_dtb_edits(dtb, RASPI4B_DTB_EDITS)
        return [
            *self._common_argv(),
            "-kernel",
            str(kernel),
            "-initrd",
            str(initrd),
            "-append",
            f"{cmdline} systemd.show_status=1 {self.extra_cmdline}",
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

    def mark(self) -> int:
        """Where the console is now: ``wait_for(..., since=mark)`` looks only at what follows
        (a guest that reboots writes every boot to the same log)."""
        return len(self.console())

    def wait_for(self, pattern: str, timeout_s: float, since: int = 0) -> re.Match[str] | None:
        """The first console match of ``pattern`` after ``since`` (see ``mark``); None on
        timeout or when QEMU exited."""
        compiled = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = compiled.search(self.console(), since)
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


def require_file(path: Path, package: str) -> Path:
    if not path.is_file():
        raise ToolError(f"{path} is missing", where=str(path), hint=f"apt-get install {package}")
    return path


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
