"""The U-Boot boot script that chooses root slot A or B (RAUC's U-Boot boot counting), its
``fw_env.config`` for Linux, and the state file both of them share.

The script and the config are real files under ``images/boot/`` (``@NAME@`` placeholders, see
``images/templates.py``). There is one script for every board: it takes the boot device from
U-Boot's distro boot (``devtype``, ``devnum``, ``distro_bootpart``), the device tree from
``fdt_addr`` and the console and load addresses from U-Boot's ``board`` (the template's header
says why), so the same ``boot.scr`` boots the Raspberry Pi 4 and QEMU's virt machine. Only the
kernel arguments and, for tests, the boot command are chosen when it is rendered.

The image builder's part::

    compile_script(boot / "boot.scr")               # boot.scr (and boot.cmd beside it)
    for name in STATE_FILES:
        (boot / name).write_bytes(initial_state())
    fw_env_config(mount=PurePosixPath("/boot/firmware"))  # -> /etc/fw_env.config

The state file (and its copy, which only the script reads and writes: see the template) is a
U-Boot environment block as ``env export -c -s SIZE`` writes it and
libubootenv reads it (one copy, no flags byte): a little-endian CRC32 of the data area, then
``name=value`` pairs, each ended by NUL, sorted by name, NUL up to ``SIZE``.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from pathlib import Path, PurePath, PurePosixPath
from types import MappingProxyType

from edge.errors import InputError
from images.run import require, run
from images.templates import render

BOOT_TEMPLATES = Path(__file__).parent / "boot"
SCRIPT_TEMPLATE = BOOT_TEMPLATES / "rauc-boot.cmd.in"
FW_ENV_TEMPLATE = BOOT_TEMPLATES / "fw_env.config.in"

# RAUC's bootnames and the partitions of the boot device that hold them (the FAT partition
# with boot.scr and the state file is the one distro boot found boot.scr on: p1).
SLOT_PARTITIONS: Mapping[str, int] = MappingProxyType({"A": 2, "B": 3})
DEFAULT_ORDER = "A B"
BOOT_ATTEMPTS = 3
# One 4 KiB FAT cluster: U-Boot rewrites it at every boot, the smaller the better.
STATE_SIZE = 0x1000
# Not uboot.env: U-Boot's own FAT environment (rpi_arm64 keeps it there) would load that file as
# its whole environment and lose its boot commands.
STATE_FILE = "rauc-state.env"
# Its second copy, written by the script just before STATE_FILE, read when STATE_FILE is damaged.
STATE_BACKUP_FILE = "rauc-state.bak"
STATE_FILES = (STATE_FILE, STATE_BACKUP_FILE)
# What U-Boot loads from the slot: Debian's stable names for the newest kernel and initrd.
KERNEL_PATH = PurePosixPath("/boot/vmlinuz")
INITRD_PATH = PurePosixPath("/boot/initrd.img")
DEFAULT_KERNEL_ARGS = "rootwait"
# Kernel arguments added at boot without rebuilding boot.scr: a text file on the boot partition
# with one line EXTRA_ARGS_VARIABLE=ARGS (what `env import -t` reads).
EXTRA_ARGS_FILE = "moltbot-extra-args.txt"
EXTRA_ARGS_VARIABLE = "moltbot_extra_args"
BOOTI = "booti ${kernel_addr_r} ${ramdisk_addr_r}:${rauc_initrd_size} ${rauc_fdt}"
# Where Linux mounts the FAT boot partition (images/system_files.py's BOOT_MOUNT).
LINUX_BOOT_MOUNT = PurePosixPath("/boot/firmware")

# Kernel arguments are spliced into the script's quoted bootargs: U-Boot variables (${serial#})
# are fine, anything that would end the quoted string or the command is not.
_NOT_IN_KERNEL_ARGS = frozenset("\"';\\")


class BootScriptError(InputError):
    """A value the boot script cannot carry, or a state file that cannot be read or written."""


def render_boot_script(
    *,
    kernel_args: str = DEFAULT_KERNEL_ARGS,
    boot_command: str | None = None,
    template: Path = SCRIPT_TEMPLATE,
) -> str:
    """The boot script's text (what mkimage wraps). ``kernel_args`` follow ``root=``,
    ``rauc.slot=`` and the board's ``console=`` arguments (and come before those of
    ``EXTRA_ARGS_FILE``); ``boot_command`` replaces ``booti`` (a test prints what it would boot
    instead)."""
    return render(
        template,
        {
            "STATE_FILE": STATE_FILE,
            "STATE_BACKUP_FILE": STATE_BACKUP_FILE,
            "STATE_SIZE": hex(STATE_SIZE),
            "PART_A": str(SLOT_PARTITIONS["A"]),
            "PART_B": str(SLOT_PARTITIONS["B"]),
            "DEFAULT_ORDER": DEFAULT_ORDER,
            "BOOT_ATTEMPTS": f"{BOOT_ATTEMPTS:x}",  # hexadecimal, as RAUC writes the counters
            "KERNEL_PATH": str(KERNEL_PATH),
            "INITRD_PATH": str(INITRD_PATH),
            "KERNEL_ARGS": _checked_kernel_args(kernel_args),
            "EXTRA_ARGS_FILE": EXTRA_ARGS_FILE,
            "EXTRA_ARGS_VARIABLE": EXTRA_ARGS_VARIABLE,
            "BOOT_COMMAND": _checked_boot_command(BOOTI if boot_command is None else boot_command),
        },
    )


def _checked_kernel_args(kernel_args: str) -> str:
    words = kernel_args.split(" ")
    bad = [word for word in words if not all(_fits_kernel_args(char) for char in word)]
    if bad:
        raise BootScriptError(
            f"kernel argument(s) {', '.join(map(repr, bad))} would break the boot script",
            where="boot script kernel_args",
            hint="printable ASCII words separated by spaces, without quotes, ';' or backslashes",
        )
    return " ".join(word for word in words if word)


def _fits_kernel_args(char: str) -> bool:
    return "!" <= char <= "~" and char not in _NOT_IN_KERNEL_ARGS


def _checked_boot_command(command: str) -> str:
    if not command.strip() or any(char in command for char in "\n\r\0"):
        raise BootScriptError(
            f"boot command {command!r} must be one non-empty line",
            where="boot script boot_command",
            hint="one U-Boot command line; separate commands with ';'",
        )
    return command


def compile_script(output: Path, source: str | None = None) -> Path:
    """Wrap ``source`` (by default :func:`render_boot_script`'s) with mkimage into ``output``
    (boot.scr), keeping the source beside it as ``boot.cmd``. mkimage stamps the time into
    the header, SOURCE_DATE_EPOCH's where that is set."""
    require("mkimage")  # before anything is written
    text = render_boot_script() if source is None else source
    plain = output.with_name("boot.cmd")
    plain.write_text(text, encoding="utf-8")
    run(
        ["mkimage", "-A", "arm64", "-O", "linux", "-T", "script", "-C", "none",
         "-n", "moltbot A/B boot", "-d", plain, output],
        step="compile the boot script",
    )  # fmt: skip
    return output


def fw_env_config(*, mount: PurePath = LINUX_BOOT_MOUNT, template: Path = FW_ENV_TEMPLATE) -> str:
    """``/etc/fw_env.config`` for the root file systems: the state file where Linux mounts the
    FAT partition (``mount``), the size boot.scr exports."""
    return render(
        template,
        {"STATE_PATH": str(PurePosixPath(mount) / STATE_FILE), "STATE_SIZE": hex(STATE_SIZE)},
    )


def initial_state() -> bytes:
    """The state file a new image starts with: BOOT_ORDER "A B", every slot's full attempts."""
    attempts = f"{BOOT_ATTEMPTS:x}"
    return encode_environment(
        {"BOOT_ORDER": DEFAULT_ORDER} | {f"BOOT_{slot}_LEFT": attempts for slot in SLOT_PARTITIONS},
        STATE_SIZE,
    )


def encode_environment(variables: Mapping[str, str], size: int) -> bytes:
    """A ``size``-byte environment block: CRC32 (little-endian) of the data area, then the
    variables sorted by name, ``name=value`` each ended by NUL, NUL up to the end."""
    for name, value in variables.items():
        if not name or "=" in name or "\0" in name + value:
            raise BootScriptError(
                f"environment variable {name!r} cannot be stored",
                where="state file",
                hint="names without '=', neither name nor value with NUL",
            )
    pairs = sorted(variables.items())
    data = b"".join(f"{name}={value}".encode() + b"\0" for name, value in pairs)
    room = size - 4
    if len(data) + 1 > room:
        raise BootScriptError(
            f"{len(data) + 1} bytes of variables do not fit in a {size}-byte state file",
            where="state file",
            hint="store fewer variables, or raise STATE_SIZE (fw_env.config and boot.scr follow)",
        )
    data = data.ljust(room, b"\0")
    return struct.pack("<I", zlib.crc32(data)) + data


def decode_environment(block: bytes, *, where: str = "state file") -> dict[str, str]:
    """The variables of an environment block; a bad CRC is an error, as it is to U-Boot."""
    if len(block) < 5:
        raise BootScriptError(
            f"{len(block)} bytes are no environment block",
            where=where,
            hint="recreate it from initial_state()",
        )
    (stored,) = struct.unpack("<I", block[:4])
    data = block[4:]
    if zlib.crc32(data) != stored:
        raise BootScriptError(
            "the state file's CRC does not match its content",
            where=where,
            hint="U-Boot ignores it and boots with the defaults; recreate it from initial_state()",
        )
    variables = {}
    for entry in data.split(b"\0\0", 1)[0].split(b"\0"):
        if entry:
            name, _, value = entry.decode(errors="replace").partition("=")
            variables[name] = value
    return variables
