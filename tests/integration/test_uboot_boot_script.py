"""The A/B boot script in real U-Boot (Debian's qemu_arm64 build, QEMU's virt machine).

Each test boots a small disk laid out like the image (p1 FAT with boot.scr and the state file,
p2/p3 root slots A and B with /boot/vmlinuz and /boot/initrd.img, p4 data). Booting a real
kernel is too slow for logic tests, so the slots hold stand-in files and the script is rendered
with a boot command that prints the slot, kernel arguments and addresses it chose and powers
the machine off: one QEMU run is one boot. The script is rendered and compiled once, as the
image builder does, and the same boot.scr carries the Raspberry Pi's settings too: it picks
QEMU's at boot, from what U-Boot says. Between boots the state file is read and written from
the host with libubootenv's fw_printenv/fw_setenv through the shipped fw_env.config, as Linux
and RAUC do on a device.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from images.uboot_script import (
    EXTRA_ARGS_FILE,
    EXTRA_ARGS_VARIABLE,
    STATE_BACKUP_FILE,
    STATE_FILE,
    STATE_FILES,
    STATE_SIZE,
    compile_script,
    decode_environment,
    encode_environment,
    fw_env_config,
    initial_state,
    render_boot_script,
)

UBOOT_BIN = Path("/usr/lib/u-boot/qemu_arm64/u-boot.bin")
TOOL_PACKAGES = {
    "qemu-system-aarch64": "qemu-system-arm",
    "mkimage": "u-boot-tools",
    "mkenvimage": "u-boot-tools",
    "fw_printenv": "libubootenv-tool",
    "fw_setenv": "libubootenv-tool",
    "mcopy": "mtools",
    "mkfs.vfat": "dosfstools",
    "mkfs.ext4": "e2fsprogs",
    "sfdisk": "fdisk",
}


def _missing_packages() -> list[str]:
    missing = {
        package
        for tool, package in TOOL_PACKAGES.items()
        if not (shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin"))
    }
    if not UBOOT_BIN.exists():
        missing.add("u-boot-qemu")
    return sorted(missing)


MISSING = _missing_packages()
pytestmark = [
    pytest.mark.image,
    pytest.mark.slow,
    pytest.mark.skipif(bool(MISSING), reason=f"needs Debian packages: {' '.join(MISSING)}"),
]

MIB = 1024 * 1024
DISK_ID = 0x4D4F4C54
# start MiB, size MiB, MBR type: FAT32 boot (like the image's), root A, root B, data
PARTITIONS = ((1, 40, "c"), (41, 4, "83"), (45, 4, "83"), (49, 2, "83"))
BOOT_LINE = re.compile(
    r"^MOLTBOT-BOOT slot=(\S*) bootargs=\[(.*)\] "
    r"kernel=(\S*) initrd=(\S*) fdt=(\S*) fdtcontrol=(\S*)\s*$",
    re.MULTILINE,
)
GAVE_UP = "moltbot-boot: no slot could be booted"
BOOT_TIMEOUT_S = 60
STATE = STATE_FILE
STAND_IN_BOOT = (
    "echo MOLTBOT-BOOT slot=${rauc_slot} bootargs=[${bootargs}] kernel=${kernel_addr_r} "
    "initrd=${ramdisk_addr_r} fdt=${rauc_fdt} fdtcontrol=${fdtcontroladdr}; poweroff"
)
# U-Boot 2023.01's qemu-arm default environment: QEMU puts its device tree at the start of RAM.
QEMU_ADDRESSES = {"kernel": "0x40400000", "initrd": "0x44000000", "fdt": "0x40000000"}
AUTOBOOT_PROMPT = "Hit any key to stop autoboot"


@dataclass(frozen=True)
class Boot:
    slot: str | None  # None: the script booted nothing
    bootargs: str
    addresses: dict[str, str]  # kernel, initrd, fdt (what booti gets), fdtcontrol
    log: str
    seconds: float


@dataclass
class AbDisk:
    """A disk image with the boot script and two slots, and the host's view of its state."""

    path: Path
    workdir: Path

    @property
    def fat(self) -> str:
        return f"{self.path}@@{PARTITIONS[0][0] * MIB}"

    @property
    def config(self) -> Path:
        return self.workdir / "fw_env.config"

    @property
    def state_copy(self) -> Path:
        return self.workdir / STATE

    def boot(self, *, expect_poweroff: bool = True, typed: str | None = None) -> Boot:
        """One QEMU run: U-Boot finds boot.scr, the script picks a slot and powers off.
        ``typed``: stop U-Boot's autoboot and type this command line at its prompt instead."""
        log = self.workdir / "console.log"
        started = time.monotonic()
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    "qemu-system-aarch64", "-M", "virt", "-cpu", "cortex-a57", "-m", "512",
                    "-nographic", "-no-reboot", "-nic", "none", "-bios", str(UBOOT_BIN),
                    "-drive", f"if=none,file={self.path},format=raw,id=disk",
                    "-device", "virtio-blk-device,drive=disk",
                ],
                stdin=subprocess.DEVNULL if typed is None else subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                if typed is not None:
                    _type_at_prompt(process, log, typed)
                self._wait(process, log, expect_poweroff)
            finally:
                if process.poll() is None:
                    process.kill()
                process.wait()
                if process.stdin is not None:
                    process.stdin.close()
        text = log.read_text(errors="replace").replace("\r", "")
        booted = list(BOOT_LINE.finditer(text))
        assert len(booted) <= 1, f"more than one boot in one run:\n{text[-3000:]}"
        seconds = time.monotonic() - started
        if not booted:
            return Boot(None, "", {}, text, seconds)
        slot, bootargs, *addresses = booted[0].groups()
        names = ("kernel", "initrd", "fdt", "fdtcontrol")
        return Boot(slot, bootargs, dict(zip(names, addresses, strict=True)), text, seconds)

    def _wait(self, process: subprocess.Popen[bytes], log: Path, expect_poweroff: bool) -> None:
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                assert expect_poweroff, f"QEMU stopped:\n{log.read_text(errors='replace')[-3000:]}"
                return
            if not expect_poweroff and GAVE_UP in log.read_text(errors="replace"):
                time.sleep(0.5)  # U-Boot goes on with its other boot targets; enough seen
                return
            time.sleep(0.1)
        pytest.fail(f"no result in {BOOT_TIMEOUT_S} s:\n{log.read_text(errors='replace')[-3000:]}")

    def state(self) -> dict[str, str]:
        """The state as Linux sees it: fw_printenv with the shipped fw_env.config."""
        self._copy_out()
        listing = _tool(["fw_printenv", "-c", str(self.config)])
        printed = dict(line.split("=", 1) for line in listing.splitlines() if "=" in line)
        assert printed == decode_environment(self.state_copy.read_bytes())
        return printed

    def fw_setenv(self, name: str, value: str) -> None:
        """What RAUC's uboot backend runs: ``fw_setenv NAME VALUE`` (counters in hex)."""
        self._copy_out()
        _tool(["fw_setenv", "-c", str(self.config), name, value])
        self.put_state(self.state_copy.read_bytes())

    def state_bytes(self, name: str = STATE) -> bytes:
        copy = self.workdir / f"copy-of-{name}"
        _tool(["mcopy", "-o", "-n", "-i", self.fat, f"::{name}", str(copy)])
        return copy.read_bytes()

    def put_variables(self, **variables: str) -> None:
        """A state file with exactly these variables, as the builder writes one."""
        self.put_state(encode_environment(variables, STATE_SIZE))

    def put_state(self, data: bytes, name: str = STATE) -> None:
        source = self.workdir / "upload.env"
        source.write_bytes(data)
        _tool(["mcopy", "-o", "-i", self.fat, str(source), f"::{name}"])

    def put_extra_args(self, text: str) -> None:
        source = self.workdir / EXTRA_ARGS_FILE
        source.write_text(text)
        _tool(["mcopy", "-o", "-i", self.fat, str(source), f"::{EXTRA_ARGS_FILE}"])

    def remove_state(self, name: str = STATE) -> None:
        _tool(["mdel", "-i", self.fat, f"::{name}"])

    def _copy_out(self) -> None:
        _tool(["mcopy", "-o", "-n", "-i", self.fat, f"::{STATE}", str(self.state_copy)])


def _type_at_prompt(process: subprocess.Popen[bytes], log: Path, line: str) -> None:
    """Stop the autoboot countdown with a key, then type ``line`` at U-Boot's prompt."""
    assert process.stdin is not None
    for wait_for, send in ((AUTOBOOT_PROMPT, " "), ("\n=> ", f"{line}\n")):
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while wait_for not in log.read_text(errors="replace").replace("\r", ""):
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"no {wait_for.strip()!r}:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
        process.stdin.write(send.encode())
        process.stdin.flush()


def _tool(argv: list[str]) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, f"{argv} failed: {result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def boot_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """boot.scr, rendered and compiled once for every test: the image's, but for the stand-in
    boot command."""
    output = tmp_path_factory.mktemp("script") / "boot.scr"
    return compile_script(output, render_boot_script(boot_command=STAND_IN_BOOT))


def make_disk(workdir: Path, boot_script: Path, *, kernels: tuple[str, ...] = ("A", "B")) -> AbDisk:
    """The test disk: no root, no loop devices (mkfs.vfat + mtools, mkfs.ext4 -d, sfdisk)."""
    images = []
    fat = workdir / "p1.img"
    _tool(["mkfs.vfat", "-F", "32", "-n", "BOOT", "-C", str(fat), str(PARTITIONS[0][1] * 1024)])
    _tool(["mcopy", "-i", str(fat), str(boot_script), "::boot.scr"])
    for name in STATE_FILES:  # as the image builder writes them
        (workdir / name).write_bytes(initial_state())
        _tool(["mcopy", "-i", str(fat), str(workdir / name), f"::{name}"])
    images.append(fat)
    for slot in ("A", "B"):
        root = workdir / f"root-{slot}"
        (root / "boot").mkdir(parents=True)
        if slot in kernels:
            (root / "boot/vmlinuz").write_bytes(f"stand-in kernel of slot {slot}\n".encode())
        (root / "boot/initrd.img").write_bytes(f"stand-in initrd of slot {slot}\n".encode())
        images.append(workdir / f"root-{slot}.img")
        _tool(["mkfs.ext4", "-q", "-L", f"root{slot}", "-d", str(root), str(images[-1]), "4M"])
    images.append(workdir / "data.img")
    _tool(["mkfs.ext4", "-q", "-L", "data", str(images[-1]), "2M"])
    disk = workdir / "disk.img"
    with disk.open("wb") as out:
        out.truncate((PARTITIONS[-1][0] + PARTITIONS[-1][1]) * MIB)
    table = [f"label: dos\nlabel-id: 0x{DISK_ID:08x}\nunit: sectors\n"]
    for number, (start, size, kind) in enumerate(PARTITIONS, 1):
        bootable = ", bootable" if number == 1 else ""
        table.append(f"start={start * 2048}, size={size * 2048}, type={kind}{bootable}\n")
    subprocess.run(["sfdisk", "-q", str(disk)], input="".join(table), text=True, check=True)
    with disk.open("r+b") as out:
        for (start, _, _), image in zip(PARTITIONS, images, strict=True):
            out.seek(start * MIB)
            out.write(image.read_bytes())
    ab = AbDisk(disk, workdir)
    config = fw_env_config(mount=PurePosixPath(workdir))
    ab.config.write_text(config)
    return ab


@pytest.fixture
def disk(tmp_path: Path, boot_script: Path) -> Iterator[AbDisk]:
    yield make_disk(tmp_path, boot_script)


def counters(state: dict[str, str]) -> tuple[str, str, str]:
    return state["BOOT_ORDER"], state["BOOT_A_LEFT"], state["BOOT_B_LEFT"]


def test_first_boot_takes_slot_a_and_counts_its_attempt(disk: AbDisk) -> None:
    assert counters(disk.state()) == ("A B", "3", "3")
    boot = disk.boot()
    assert boot.slot == "A"
    assert boot.bootargs.split() == [
        f"root=PARTUUID={DISK_ID:08x}-02",
        "rauc.slot=A",
        "console=ttyAMA0",
        "rootwait",
    ]
    assert counters(disk.state()) == ("A B", "2", "3")


def test_the_one_boot_scr_picks_qemus_console_and_addresses_under_qemu(
    disk: AbDisk, boot_script: Path
) -> None:
    """The boot.scr on the disk is the one compiled once for every board: it holds the Pi's
    console and load addresses too, and under qemu_arm64 (board "qemu-arm") takes QEMU's."""
    on_disk = disk.workdir / "boot.scr.read-back"
    _tool(["mcopy", "-n", "-i", disk.fat, "::boot.scr", str(on_disk)])
    compiled = on_disk.read_bytes()
    assert compiled == boot_script.read_bytes()
    assert b"console=ttyS1,115200 console=tty0" in compiled
    assert b"setenv kernel_addr_r 0x00200000" in compiled
    boot = disk.boot()
    assert "moltbot-boot: board [qemu-arm], state on virtio 0:1" in boot.log
    assert boot.slot == "A"
    assert [arg for arg in boot.bootargs.split() if arg.startswith("console=")] == [
        "console=ttyAMA0"
    ]
    assert {name: boot.addresses[name] for name in QEMU_ADDRESSES} == QEMU_ADDRESSES
    assert boot.addresses["fdtcontrol"] != boot.addresses["fdt"]  # QEMU's tree, not U-Boot's copy
    assert "unknown board" not in boot.log


def test_an_unknown_board_boots_with_u_boot_addresses_and_no_console_argument(
    disk: AbDisk,
) -> None:
    boot = disk.boot(typed="setenv board mystery-board; run distro_bootcmd")
    assert "moltbot-boot: unknown board [mystery-board]" in boot.log
    assert boot.slot == "A"
    assert boot.bootargs.split() == [f"root=PARTUUID={DISK_ID:08x}-02", "rauc.slot=A", "rootwait"]
    assert {name: boot.addresses[name] for name in QEMU_ADDRESSES} == QEMU_ADDRESSES


def test_without_fdt_addr_the_device_tree_u_boot_runs_on_is_booted(disk: AbDisk) -> None:
    boot = disk.boot(typed="setenv fdt_addr; run distro_bootcmd")
    assert boot.slot == "A"
    assert boot.addresses["fdt"] == boot.addresses["fdtcontrol"]


def test_extra_args_file_on_the_boot_partition_is_appended(disk: AbDisk) -> None:
    disk.put_extra_args(f"{EXTRA_ARGS_VARIABLE}=moltbot.selftest=1 systemd.show_status=1\n")
    boot = disk.boot()
    assert boot.bootargs.split()[-4:] == [
        "console=ttyAMA0",
        "rootwait",
        "moltbot.selftest=1",
        "systemd.show_status=1",
    ]


def test_extra_args_are_never_run_as_commands(disk: AbDisk) -> None:
    disk.put_extra_args(f'{EXTRA_ARGS_VARIABLE}=quiet"; echo PWNED; setenv rauc_slot X\n')
    boot = disk.boot()
    assert "\nPWNED" not in boot.log
    assert boot.slot == "A"


def test_state_file_u_boot_writes_is_the_format_the_builder_writes(disk: AbDisk) -> None:
    """Byte for byte: U-Boot's ``env export -c``, encode_environment and mkenvimage agree."""
    disk.boot()
    written = disk.state_bytes()
    assert len(written) == STATE_SIZE
    assert written == encode_environment(decode_environment(written), STATE_SIZE)
    listing = disk.workdir / "initial.txt"
    listing.write_text("BOOT_A_LEFT=3\nBOOT_B_LEFT=3\nBOOT_ORDER=A B\n")  # sorted, as U-Boot
    made = disk.workdir / "mkenvimage.env"
    _tool(["mkenvimage", "-s", hex(STATE_SIZE), "-p", "0", "-o", str(made), str(listing)])
    assert made.read_bytes() == initial_state()


def test_mark_good_from_linux_gives_the_slot_its_attempts_back(disk: AbDisk) -> None:
    disk.boot()
    disk.boot()
    assert counters(disk.state()) == ("A B", "1", "3")
    disk.fw_setenv("BOOT_A_LEFT", "3")  # rauc status mark-good on slot A
    assert disk.boot().slot == "A"
    assert counters(disk.state()) == ("A B", "2", "3")


def test_new_slot_b_that_never_comes_up_falls_back_to_a_after_three_boots(disk: AbDisk) -> None:
    disk.fw_setenv("BOOT_B_LEFT", "3")  # rauc install: mark-active B
    disk.fw_setenv("BOOT_ORDER", "B A")
    seen = []
    for _ in range(3):
        seen.append(disk.boot().slot)
        seen.append(disk.state()["BOOT_B_LEFT"])
    assert seen == ["B", "2", "B", "1", "B", "0"]
    assert disk.boot().slot == "A"
    assert counters(disk.state()) == ("B A", "2", "0")
    disk.fw_setenv("BOOT_A_LEFT", "3")  # mark-good on A: the device stays on A
    assert disk.boot().slot == "A"
    assert counters(disk.state()) == ("B A", "2", "0")


def test_both_counters_used_up_refills_them_and_boots_the_primary_once(disk: AbDisk) -> None:
    """Power cut at every boot until no slot has attempts left: still exactly one boot per
    power-on (no reset loop), the primary first, both slots with fresh attempts."""
    disk.put_variables(BOOT_ORDER="B A", BOOT_A_LEFT="0", BOOT_B_LEFT="0")
    boot = disk.boot()
    assert boot.slot == "B"
    assert boot.log.count("## Executing script") == 1
    assert "every slot gets 3 attempts again" in boot.log
    assert counters(disk.state()) == ("B A", "3", "2")
    assert disk.boot().slot == "B"
    assert counters(disk.state()) == ("B A", "3", "1")


def test_slot_marked_bad_is_not_booted_even_when_the_other_runs_out(disk: AbDisk) -> None:
    disk.put_variables(BOOT_ORDER="A", BOOT_A_LEFT="0", BOOT_B_LEFT="3")  # mark-bad B
    assert disk.boot().slot == "A"
    assert counters(disk.state()) == ("A", "2", "3")


@pytest.mark.parametrize(
    ("order", "left"),
    [("x;echo PWNED C", "3"), ("", "3"), ("A B", "zz"), ("A B", "a")],
    ids=["garbage-order", "empty-order", "garbage-counter", "counter-above-attempts"],
)
def test_unusable_values_fall_back_to_safe_ones(disk: AbDisk, order: str, left: str) -> None:
    disk.put_variables(BOOT_ORDER=order, BOOT_A_LEFT=left, BOOT_B_LEFT="3")
    boot = disk.boot()
    assert "\nPWNED" not in boot.log  # a value is never run as a command
    if left == "zz":  # a counter that does not parse is no attempt left, as in RAUC (strtoull)
        assert boot.slot == "B"
        assert counters(disk.state()) == ("A B", "zz", "2")
    else:
        assert boot.slot == "A"
        assert counters(disk.state()) == ("A B", "2", "3")


def damage(disk: AbDisk, how: str, name: str) -> None:
    if how == "missing":
        disk.remove_state(name)
    else:
        data = bytearray(disk.state_bytes(name))
        data[20] ^= 0x01  # a torn write: the CRC no longer matches
        disk.put_state(bytes(data), name)


@pytest.mark.parametrize("how", ["missing", "bad-crc"])
def test_both_state_copies_missing_or_damaged_means_the_defaults(disk: AbDisk, how: str) -> None:
    for name in STATE_FILES:
        disk.put_state(encode_environment({"BOOT_ORDER": "B A"}, STATE_SIZE), name)
        damage(disk, how, name)
    boot = disk.boot()
    assert "no readable state file; using the defaults" in boot.log
    assert boot.slot == "A"
    assert counters(disk.state()) == ("A B", "2", "3")


@pytest.mark.parametrize("how", ["missing", "bad-crc"])
def test_a_torn_state_file_is_read_from_its_copy_and_both_are_written_again(
    disk: AbDisk, how: str
) -> None:
    """A power cut while U-Boot rewrote the state: the copy holds the last boot's state (here
    slot B primary, A marked bad), not the defaults, which would start slot A again."""
    last_boot = encode_environment(
        {"BOOT_ORDER": "B", "BOOT_A_LEFT": "0", "BOOT_B_LEFT": "2"}, STATE_SIZE
    )
    for name in STATE_FILES:
        disk.put_state(last_boot, name)
    damage(disk, how, STATE_FILE)
    boot = disk.boot()
    assert f"state read from {STATE_BACKUP_FILE}" in boot.log
    assert boot.slot == "B"
    assert counters(disk.state()) == ("B", "0", "1")
    assert disk.state_bytes(STATE_BACKUP_FILE) == disk.state_bytes(STATE_FILE)


def test_the_copy_follows_every_attempt_and_linux_changes_reach_it_at_the_next_boot(
    disk: AbDisk,
) -> None:
    disk.boot()
    assert disk.state_bytes(STATE_BACKUP_FILE) == disk.state_bytes(STATE_FILE)
    disk.fw_setenv("BOOT_ORDER", "B A")  # rauc install: Linux writes only the state file
    assert decode_environment(disk.state_bytes(STATE_BACKUP_FILE))["BOOT_ORDER"] == "A B"
    assert disk.boot().slot == "B"
    assert decode_environment(disk.state_bytes(STATE_BACKUP_FILE)) == disk.state()


def test_slot_without_a_kernel_is_counted_and_the_next_slot_boots(
    tmp_path: Path, boot_script: Path
) -> None:
    disk = make_disk(tmp_path, boot_script, kernels=("B",))
    boot = disk.boot()
    assert boot.slot == "B"
    assert f"root=PARTUUID={DISK_ID:08x}-03" in boot.bootargs.split()
    assert counters(disk.state()) == ("A B", "2", "2")


def test_no_kernel_in_any_slot_gives_up_after_two_rounds(tmp_path: Path, boot_script: Path) -> None:
    disk = make_disk(tmp_path, boot_script, kernels=())
    boot = disk.boot(expect_poweroff=False)
    assert boot.slot is None
    assert boot.log.count("has no loadable kernel") == 4
    assert boot.log.count(GAVE_UP) == 1
    assert counters(disk.state()) == ("A B", "2", "2")


def test_a_slot_marked_bad_stays_out_when_the_state_file_is_torn_at_the_next_boot(
    disk: AbDisk,
) -> None:
    """The health gate marks the new slot bad (Linux writes the state file only); the next
    boot writes the copy, then the state file, and the power goes while it writes the latter."""
    disk.fw_setenv("BOOT_B_LEFT", "3")  # rauc install into B
    disk.fw_setenv("BOOT_ORDER", "B A")
    assert disk.boot().slot == "B"
    disk.fw_setenv("BOOT_B_LEFT", "0")  # rauc status mark-bad B
    disk.fw_setenv("BOOT_ORDER", "A")
    assert disk.boot().slot == "A"
    damage(disk, "bad-crc", STATE_FILE)
    boot = disk.boot()
    assert f"state read from {STATE_BACKUP_FILE}" in boot.log
    assert boot.slot == "A"
    assert counters(disk.state()) == ("A", "1", "0")
