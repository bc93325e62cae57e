"""Reading an ext4 file system without mounting it (images/debugfs.py), on a real one made with
mkfs.ext4 -d from a folder: names, bytes, a copy out, a link, and missing paths said clearly."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from images import debugfs
from images.run import ToolError

pytestmark = pytest.mark.skipif(
    shutil.which("debugfs") is None or shutil.which("mkfs.ext4") is None,
    reason="needs e2fsprogs (make host-deps installs it)",
)


@pytest.fixture
def file_system(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    (tree / "boot").mkdir(parents=True)
    (tree / "boot/vmlinuz-6.1.0-28-arm64").write_bytes(b"kernel\x00\xff")
    (tree / "boot/name with space").write_text("x")
    (tree / "boot/initrd.img").symlink_to("initrd.img-6.1.0-28-arm64")
    image = tmp_path / "root.ext4"
    subprocess.run(
        ["mkfs.ext4", "-q", "-F", "-d", str(tree), str(image), "8M"], check=True
    )  # fmt: skip
    return image


def test_the_names_in_a_folder_are_listed_with_dot_entries(file_system: Path) -> None:
    assert sorted(debugfs.names_in(file_system, "/boot")) == [
        ".", "..", "initrd.img", "name with space", "vmlinuz-6.1.0-28-arm64",
    ]  # fmt: skip


def test_a_file_is_read_and_copied_out_byte_for_byte(file_system: Path, tmp_path: Path) -> None:
    assert debugfs.cat(file_system, "/boot/vmlinuz-6.1.0-28-arm64") == b"kernel\x00\xff"
    local = debugfs.dump(file_system, "/boot/vmlinuz-6.1.0-28-arm64", tmp_path / "k")
    assert local.read_bytes() == b"kernel\x00\xff"


def test_a_symbolic_links_target_is_read(file_system: Path) -> None:
    assert debugfs.link_target(file_system, "/boot/initrd.img") == "initrd.img-6.1.0-28-arm64"


def test_missing_paths_are_said_clearly(file_system: Path, tmp_path: Path) -> None:
    with pytest.raises(ToolError, match="/boot/nothing is not in the file system"):
        debugfs.dump(file_system, "/boot/nothing", tmp_path / "n")
    with pytest.raises(ToolError, match="not a short symbolic link"):
        debugfs.link_target(file_system, "/boot/vmlinuz-6.1.0-28-arm64")
    assert debugfs.names_in(file_system, "/nowhere") == []
