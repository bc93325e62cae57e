"""How the reproducibility check names the first difference between two builds."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from images.reproducible import first_byte_difference, first_file_difference


def tree(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("moltbot\n")
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "tool").write_text("#!/bin/sh\n")
    (root / "usr" / "bin" / "link").symlink_to("tool")
    return root


def test_identical_trees_have_no_difference(tmp_path: Path) -> None:
    assert first_file_difference(tree(tmp_path / "a"), tree(tmp_path / "b")) is None


def test_the_first_differing_file_is_named_with_what_differs(tmp_path: Path) -> None:
    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    (b / "usr" / "bin" / "tool").write_text("#!/usr/bin/env sh\n")
    assert first_file_difference(a, b) == "usr/bin/tool: content (10 vs 18 bytes)"
    (b / "etc" / "hostname").chmod(0o600)
    assert first_file_difference(a, b) == "etc/hostname: mode 644 vs 600"


def test_a_file_in_one_build_only_and_a_changed_link_are_named(tmp_path: Path) -> None:
    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    (b / "usr" / "bin" / "link").unlink()
    (b / "usr" / "bin" / "link").symlink_to("other")
    assert first_file_difference(a, b) == "usr/bin/link: link to tool vs other"
    (a / "etc" / "machine-id").write_text("")
    assert first_file_difference(a, b) == "etc/machine-id: only in the first build"


def test_times_differ_only_when_the_content_is_the_same(tmp_path: Path) -> None:
    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    os.utime(a / "etc" / "hostname", (1_700_000_000, 1_700_000_000))
    os.utime(b / "etc" / "hostname", (1_700_000_100, 1_700_000_100))
    assert first_file_difference(a, b) == "etc/hostname: mtime 1700000000 vs 1700000100"


def disk(path: Path) -> Path:
    path.write_bytes(bytes(8 << 20))
    subprocess.run(
        ["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(path)],
        input="label: dos\nlabel-id: 0x1234abcd\n"
        "start=2048, size=4096, type=c\nstart=6144, size=8192, type=83\n",
        text=True,
        check=True,
    )
    return path


def test_the_first_differing_byte_is_placed_in_its_partition(tmp_path: Path) -> None:
    one, two = disk(tmp_path / "one.img"), disk(tmp_path / "two.img")
    with two.open("r+b") as stream:
        stream.seek(6144 * 512 + 1000)
        stream.write(b"\x01")
    found = first_byte_difference(one, two, block=4096)
    assert found == (
        f"the disks differ first at byte {6144 * 512 + 1000} (partition 2 (root), 1000 bytes in)"
    )
