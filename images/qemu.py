"""Boot a built image under ``qemu-system-aarch64 -M virt`` (TCG, no KVM needed).

The image's own kernel and initrd (read from its boot partition with mtools), the whole image as
a virtio disk (so fstab, the data partition and first-boot growth are exercised), user-mode
networking with the appliance's API port forwarded to loopback; the guest reaches the host at
10.0.2.2. The serial console goes to a log file that callers wait on.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from images.disk import fat_offset, read_table
from images.run import ToolError, require, run

HOST_FROM_GUEST = "10.0.2.2"


@dataclass
class QemuBoot:
    image: Path
    workdir: Path
    api_port: int
    memory_mib: int = 1536
    cpus: int = 2
    extra_cmdline: str = "moltbot.selftest=1"
    console_log: Path = field(init=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    started_at: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.console_log = self.workdir / "console.log"

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
        append = (
            f"root=PARTUUID={root_partuuid} rootfstype=ext4 rootwait console=ttyAMA0 "
            f"systemd.show_status=1 {self.extra_cmdline}"
        )
        return [
            require("qemu-system-aarch64"),
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
            "-nographic",
            "-no-reboot",
            "-kernel",
            str(kernel),
            "-initrd",
            str(initrd),
            "-append",
            append,
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
