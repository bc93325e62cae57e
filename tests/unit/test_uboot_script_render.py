"""The A/B boot script's renderer, fw_env.config and the state file's bytes (no U-Boot here:
tests/integration/test_uboot_boot_script.py runs the script in real U-Boot)."""

from __future__ import annotations

import re
import shutil
import struct
import zlib
from pathlib import Path, PurePosixPath

import pytest

from images.run import ToolError
from images.templates import PLACEHOLDER, TemplateError
from images.uboot_script import (
    BOOT_ATTEMPTS,
    EXTRA_ARGS_FILE,
    EXTRA_ARGS_VARIABLE,
    SCRIPT_TEMPLATE,
    SLOT_PARTITIONS,
    STATE_FILE,
    BootScriptError,
    compile_script,
    decode_environment,
    encode_environment,
    fw_env_config,
    initial_state,
    render_boot_script,
)


def board_branches(source: str) -> dict[str, list[str]]:
    """The script's per-board branch, each as its lines: {"rpi": [...], "qemu-arm": [...],
    "other": [...]}."""
    found = re.search(
        r'^if test "\$\{board\}" = rpi; then\n(.*?)'
        r'^elif test "\$\{board\}" = qemu-arm; then\n(.*?)'
        r"^else\n(.*?)^fi\n",
        source,
        re.MULTILINE | re.DOTALL,
    )
    assert found, "the script no longer chooses by ${board}"
    return {
        board: [line.strip() for line in block.splitlines()]
        for board, block in zip(("rpi", "qemu-arm", "other"), found.groups(), strict=True)
    }


def commands(source: str) -> str:
    """The script without its comments."""
    return "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("#"))


def test_every_placeholder_is_filled_and_the_device_comes_from_distro_boot() -> None:
    source = render_boot_script()
    assert PLACEHOLDER.findall(source) == []
    state_on_script_partition = "${devtype} ${devnum}:${distro_bootpart} ${kernel_addr_r}"
    assert "for rauc_file in rauc-state.env rauc-state.bak; do\n" in source
    assert f"if fatload {state_on_script_partition} ${{rauc_file}}; then\n" in source
    assert f"fatwrite {state_on_script_partition} rauc-state.env 0x1000 ||" in source
    assert f"fatwrite {state_on_script_partition} rauc-state.bak 0x1000 ||" in source
    # The copy first: a tear in either write leaves one copy with the state this boot wrote.
    assert source.index("rauc-state.bak 0x1000 ||") < source.index("rauc-state.env 0x1000 ||")
    assert "load ${devtype} ${devnum}:${rauc_part} ${kernel_addr_r} /boot/vmlinuz" in source
    assert "env export -c -s 0x1000 ${kernel_addr_r} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT" in source
    assert "booti ${kernel_addr_r} ${ramdisk_addr_r}:${rauc_initrd_size} ${rauc_fdt}" in source
    assert "\nreset" not in source and "saveenv" not in source
    assert re.search(r"\b(mmc|virtio)\b", commands(source)) is None  # no board's device


def test_no_command_has_an_apostrophe_which_u_boot_hush_takes_as_a_quote() -> None:
    assert "'" not in commands(render_boot_script())


def test_slots_are_the_partitions_the_constants_name() -> None:
    source = render_boot_script()
    for slot, partition in SLOT_PARTITIONS.items():
        assert f"setenv rauc_slot {slot}\n\t\t\tsetenv rauc_part {partition}\n" in source
    assert dict(SLOT_PARTITIONS) == {"A": 2, "B": 3}


def test_pi_branch_has_the_pi_console_and_load_addresses() -> None:
    assert board_branches(render_boot_script())["rpi"] == [
        "setenv kernel_addr_r 0x00200000",
        "setenv fdt_addr_r 0x08000000",
        "setenv ramdisk_addr_r 0x08100000",
        'setenv rauc_args "console=ttyS1,115200 console=tty0 ${rauc_args}"',
    ]


def test_qemu_branch_keeps_u_boot_addresses_and_uses_the_pl011_console() -> None:
    assert board_branches(render_boot_script())["qemu-arm"] == [
        'setenv rauc_args "console=ttyAMA0 ${rauc_args}"'
    ]


def test_unknown_board_gets_u_boot_addresses_no_console_and_a_message() -> None:
    other = board_branches(render_boot_script())["other"]
    assert len(other) == 1 and other[0].startswith('echo "moltbot-boot: unknown board [${board}]')


def test_device_tree_is_the_one_u_boot_was_given_before_its_own_copy() -> None:
    source = render_boot_script()
    fallback = source.index("setenv rauc_fdt ${fdtcontroladdr}\n")
    preferred = source.index('if test -n "${fdt_addr}"; then\n\tsetenv rauc_fdt ${fdt_addr}\n')
    assert fallback < preferred < source.index("booti ${kernel_addr_r}")
    assert "fdtfile" not in commands(source) and "fdt_addr_r}" not in commands(source)


def test_kernel_args_are_chosen_at_render_time_after_the_board_console() -> None:
    source = render_boot_script(kernel_args="rootwait  fsck.repair=yes systemd.unit=${unit}")
    assert 'setenv rauc_args "rootwait fsck.repair=yes systemd.unit=${unit}"\n' in source
    assert (
        'setenv bootargs "root=PARTUUID=${rauc_partuuid} rauc.slot=${rauc_slot} ${rauc_args}"'
        in source
    )
    assert 'setenv rauc_args ""\n' in render_boot_script(kernel_args="")


def test_extra_args_are_read_from_the_boot_partition_only_where_the_file_is() -> None:
    source = render_boot_script()
    where = "${devtype} ${devnum}:${distro_bootpart}"
    assert f"if test -e {where} {EXTRA_ARGS_FILE}; then\n" in source
    assert f"env import -t ${{kernel_addr_r}} ${{filesize}} {EXTRA_ARGS_VARIABLE}\n" in source
    assert f'setenv rauc_args "${{rauc_args}} ${{{EXTRA_ARGS_VARIABLE}}}"\n' in source
    assert f"setenv {EXTRA_ARGS_VARIABLE}\n" in source  # nothing left from an earlier run


def test_boot_command_is_replaceable() -> None:
    source = render_boot_script(boot_command="echo slot=${rauc_slot}; poweroff")
    assert "\t\t\t\techo slot=${rauc_slot}; poweroff\n" in source
    assert "booti ${" not in source


def test_attempts_in_the_script_and_the_initial_state_agree_in_hex() -> None:
    hex_attempts = f"{BOOT_ATTEMPTS:x}"
    source = render_boot_script()
    assert f"setenv BOOT_A_LEFT {hex_attempts}\n" in source
    assert f"itest ${{BOOT_B_LEFT}} -le {hex_attempts} ||" in source
    assert decode_environment(initial_state())["BOOT_B_LEFT"] == hex_attempts


def test_a_placeholder_the_renderer_does_not_fill_is_refused(tmp_path: Path) -> None:
    template = tmp_path / "boot.cmd.in"
    template.write_text(SCRIPT_TEMPLATE.read_text() + "echo @SURPRISE@\n")
    with pytest.raises(TemplateError, match="@SURPRISE@"):
        render_boot_script(template=template)


def test_a_value_the_template_no_longer_asks_for_is_refused(tmp_path: Path) -> None:
    template = tmp_path / "boot.cmd.in"
    template.write_text(SCRIPT_TEMPLATE.read_text().replace("@BOOT_COMMAND@", "booti"))
    with pytest.raises(TemplateError, match="@BOOT_COMMAND@"):
        render_boot_script(template=template)


def test_a_missing_template_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="missing"):
        render_boot_script(template=tmp_path / "absent.cmd.in")


@pytest.mark.parametrize(
    "kernel_args",
    [
        'rootwait init="/bin/sh"',
        "rootwait'",
        "quiet;reset",
        "rootwait\nreset",
        "rootwait\treset",
        "rootwait\\",
        "rootwait é",
    ],
    ids=["double-quote", "single-quote", "semicolon", "newline", "tab", "backslash", "non-ascii"],
)
def test_kernel_args_that_would_break_the_script_are_refused(kernel_args: str) -> None:
    with pytest.raises(BootScriptError, match="kernel argument") as raised:
        render_boot_script(kernel_args=kernel_args)
    assert raised.value.exit_code == 2
    assert raised.value.where == "boot script kernel_args"


@pytest.mark.parametrize("command", ["", "   ", "booti\nreset", "booti\r", "booti\0"])
def test_a_boot_command_that_is_not_one_line_is_refused(command: str) -> None:
    with pytest.raises(BootScriptError, match="one non-empty line") as raised:
        render_boot_script(boot_command=command)
    assert raised.value.where == "boot script boot_command"


def test_missing_mkimage_names_the_debian_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolError, match="mkimage is not installed") as raised:
        compile_script(tmp_path / "boot.scr")
    assert raised.value.hint is not None
    assert raised.value.hint.startswith("apt-get install u-boot-tools")
    assert not (tmp_path / "boot.cmd").exists()  # nothing written before the check


@pytest.mark.skipif(shutil.which("mkimage") is None, reason="needs mkimage (u-boot-tools)")
def test_compiled_script_is_a_legacy_u_boot_script_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    output = compile_script(tmp_path / "boot.scr")
    header = output.read_bytes()[:64]
    magic, timestamp = struct.unpack(">II", header[:4] + header[8:12])
    assert (magic, header[30]) == (0x27051956, 6)  # IH_MAGIC, IH_TYPE_SCRIPT
    assert timestamp == 1700000000  # reproducible: mkimage honours SOURCE_DATE_EPOCH
    assert (tmp_path / "boot.cmd").read_text() == render_boot_script()


@pytest.mark.skipif(shutil.which("mkimage") is None, reason="needs mkimage (u-boot-tools)")
def test_compile_script_wraps_the_source_it_is_given(tmp_path: Path) -> None:
    source = render_boot_script(boot_command="echo stand-in")
    output = compile_script(tmp_path / "boot.scr", source)
    assert (tmp_path / "boot.cmd").read_text() == source
    assert source.encode() in output.read_bytes()


def test_initial_state_is_a_crc_checked_block_with_the_defaults() -> None:
    block = initial_state()
    assert len(block) == 0x1000
    assert struct.unpack("<I", block[:4])[0] == zlib.crc32(block[4:])
    assert block[4:].startswith(b"BOOT_A_LEFT=3\0BOOT_B_LEFT=3\0BOOT_ORDER=A B\0\0")
    assert decode_environment(block) == {
        "BOOT_ORDER": "A B",
        "BOOT_A_LEFT": "3",
        "BOOT_B_LEFT": "3",
    }


def test_a_block_with_a_bad_crc_is_refused_like_u_boot_does() -> None:
    block = bytearray(initial_state())
    block[10] ^= 0xFF
    with pytest.raises(BootScriptError, match="CRC"):
        decode_environment(bytes(block))


@pytest.mark.parametrize(
    "variables",
    [{"A=B": "1"}, {"NAME": "nul\0inside"}, {"BIG": "x" * 5000}],
    ids=["equals-in-name", "nul-in-value", "too-big"],
)
def test_variables_that_cannot_be_stored_are_refused(variables: dict[str, str]) -> None:
    with pytest.raises(BootScriptError):
        encode_environment(variables, 0x1000)


def test_fw_env_config_points_at_the_state_file_on_the_boot_partition() -> None:
    config = fw_env_config()
    assert f"/boot/firmware/{STATE_FILE}\t0x0\t0x1000\n" in config
    assert PLACEHOLDER.findall(config) == []
    elsewhere = fw_env_config(mount=Path("/tmp/boot"))
    assert "/tmp/boot/rauc-state.env\t0x0\t0x1000\n" in elsewhere
    assert fw_env_config(mount=PurePosixPath("/tmp/boot")) == elsewhere
